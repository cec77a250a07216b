"""The receiver's renderer: a trained MODEL directory → frames of any size from (expression, pose).

r = Renderer.from_model_dir("work/model")
frame = r.render(expression, pose, 512, 512)  # uint8 (H,W,3)

Frames are rendered by :func:`nerfvc.render.fast.render_frame` (the same model, evaluated at far fewer
points); ``reference=True`` renders every ray with ``PortraitNeRF.render_rays`` exactly as in training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from tqdm import tqdm

from nerfvc.camera import Camera
from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.fsutil import read_json
from nerfvc.io.video import write_video
from nerfvc.modeldir import read_model_manifest
from nerfvc.render.fast import FastRenderConfig, render_frame, supports
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.rays import pixel_rays
from nerfvc.render.threads import configure_threads

NERF_FORMAT = "nerfvc-nerf"
NERF_VERSION = 1


def load_nerf(path: str | Path, verify: bool = True) -> tuple[PortraitNeRF, Camera, np.ndarray]:
    """Model, camera and background (H,W,3) uint8 from a MODEL directory."""
    path = Path(path)
    read_model_manifest(path, verify=verify)
    meta = read_json(path / "nerf.json")
    if meta.get("format") != NERF_FORMAT or meta.get("version") != NERF_VERSION:
        raise ModelMismatchError(f"{path}: nerf.json is not a version {NERF_VERSION} nerfvc NeRF")
    model = PortraitNeRF(ModelConfig.from_dict(meta["model"]))
    try:
        missing, unexpected = model.load_state_dict(load_file(str(path / "nerf.safetensors")), strict=False)
    except Exception as e:
        raise ModelMismatchError(f"{path}: nerf.safetensors does not fit nerf.json ({e})") from e
    if unexpected or set(missing) - model.OPTIONAL_BUFFERS:
        wrong = ", ".join([*(f"missing {k}" for k in missing), *(f"unexpected {k}" for k in unexpected)])
        raise ModelMismatchError(f"{path}: nerf.safetensors does not fit nerf.json ({wrong})")
    model.eval()
    camera = Camera.from_dict(read_json(path / "camera.json"))
    try:
        bg = np.asarray(Image.open(path / "background.png").convert("RGB"))
    except FileNotFoundError as e:
        raise InputError(f"{path / 'background.png'}: file not found") from e
    return model, camera, bg


def frame_rays(
    camera: Camera, background: np.ndarray, width: int, height: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pixel of a ``width`` x ``height`` frame of ``camera``: directions (H·W,3), uv (H·W,2) and the
    background (H,W,3) uint8 resized to it, as float colours (H·W,3) in [0,1]."""
    dirs, uv = pixel_rays(camera.scaled(width, height), device)
    im = Image.fromarray(background)
    if im.size != (width, height):
        im = im.resize(
            (width, height), Image.Resampling.BOX if width < im.size[0] else Image.Resampling.BICUBIC
        )
    bg = torch.from_numpy(np.asarray(im).copy()).to(device).float().reshape(-1, 3) / 255
    return dirs, uv, bg


class Renderer:
    """Renders frames from a :class:`PortraitNeRF` at any size; caches rays and backgrounds per size."""

    def __init__(
        self,
        model: PortraitNeRF,
        camera: Camera,
        background: np.ndarray,
        device: str | torch.device = "cpu",
        chunk: int = 1 << 16,
        samples: tuple[int, int] | None = None,
        reference: bool = False,
        expression_range: bool = True,
    ):
        self.model = model.to(device).eval()
        # clamp each frame's expression into the model's training range (PortraitNeRF.within_training_range)
        self.expression_range = expression_range
        self.camera = camera
        self.background = background  # (H,W,3) uint8 at the camera's size
        self.device = torch.device(device)
        self.chunk = chunk
        self.samples = samples  # (coarse, fine) samples per ray; None = as trained
        self.reference = reference or not supports(model)  # every ray as in training (slow)
        # fine samples: as asked, else as trained up to the frame renderer's default (12: german, 256²,
        # 0.14 dB below the training renderer's 24 at 1.6x the frame rate; benchmarks/results/render.json)
        n_coarse, n_fine = samples or (model.cfg.n_coarse, min(model.cfg.n_fine, FastRenderConfig.n_fine))
        self.fast = FastRenderConfig(n_coarse=n_coarse, n_fine=n_fine)
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_model_dir(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        verify: bool = True,
        samples: tuple[int, int] | None = None,
        reference: bool = False,
    ) -> Renderer:
        """Load a MODEL directory (checking its fingerprint when ``verify``)."""
        configure_threads()
        model, camera, bg = load_nerf(path, verify=verify)
        return cls(model, camera, bg, device, samples=samples, reference=reference)

    @property
    def expression_dim(self) -> int:
        """Length of the per-frame input vector (expression, then the torso shift if the model has one)."""
        return self.model.input_dim

    def _rays(self, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (width, height)
        if key not in self._cache:
            rays = frame_rays(self.camera, self.background, width, height, self.device)
            self._cache = {key: rays} | dict(list(self._cache.items())[-3:])
        return self._cache[key]

    @torch.inference_mode()
    def render_float(
        self, expression: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor, width: int, height: int
    ) -> torch.Tensor:
        """Expression (E,) and pose (12,) → image (H,W,3) float in [0,1]."""
        expr = torch.as_tensor(np.asarray(expression, np.float32), device=self.device).reshape(1, -1)
        pos = torch.as_tensor(np.asarray(pose, np.float32), device=self.device).reshape(1, 12)
        if expr.shape[1] != self.expression_dim:
            raise InputError(
                f"expression has {expr.shape[1]} values, the model expects {self.expression_dim}"
            )
        if self.expression_range:
            expr = self.model.within_training_range(expr)
        dirs, uv, bg = self._rays(width, height)
        if not self.reference:
            img = render_frame(self.model, dirs, uv, bg, height, width, expr, pos, self.fast)
            return img.clamp(0, 1).reshape(height, width, 3)
        out = []
        for i in range(0, dirs.shape[0], self.chunk):
            n = min(self.chunk, dirs.shape[0] - i)
            o = self.model.render_rays(
                dirs[i : i + n], uv[i : i + n], expr, pos, bg[i : i + n], samples=self.samples
            )
            out.append(o["rgb"])
        return torch.cat(out).clamp(0, 1).reshape(height, width, 3)

    @torch.inference_mode()
    def render(
        self, expression: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor, width: int, height: int
    ) -> np.ndarray:
        """Expression (E,) and pose (12,) → uint8 RGB frame (H,W,3)."""
        img = self.render_float(expression, pose, width, height)  # a new tensor: scaled in place
        return img.mul_(255).add_(0.5).byte().cpu().numpy()

    def write_video(
        self,
        output: str | Path,
        expression: np.ndarray,
        pose: np.ndarray,
        width: int,
        height: int,
        fps: float,
        compose: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ) -> str:
        """Render expressions ``(N, E)`` and poses ``(N, 12)`` at ``width``×``height`` into an H.264 mp4 →
        a one-line summary (frames, size, median render time). ``compose(i, frame)``, when given, makes
        frame i's shown picture from its render (the quality guard's fallback)."""
        times: list[float] = []

        def frames() -> Iterator[np.ndarray]:
            for i in tqdm(range(len(pose)), desc=f"render {width}x{height}", dynamic_ncols=True):
                t = time.perf_counter()
                img = self.render(expression[i], pose[i], width, height)
                times.append(time.perf_counter() - t)
                yield compose(i, img) if compose else img

        count = write_video(output, frames(), fps)
        ms = 1000 * float(np.median(times)) if times else 0.0
        return f"wrote {count} frames {width}x{height} to {output} ({ms:.0f} ms/frame)"

    def time_render(
        self, expression: np.ndarray, pose: np.ndarray, width: int, height: int, n: int = 5
    ) -> float:
        """Median wall time (s) of ``n`` renders after one warm-up."""
        self.render(expression, pose, width, height)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            self.render(expression, pose, width, height)
            times.append(time.perf_counter() - t)
        return float(np.median(times))
