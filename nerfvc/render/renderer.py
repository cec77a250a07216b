"""The receiver's renderer: a trained MODEL directory → frames of any size from (expression, pose).

r = Renderer.from_model_dir("work/model")
frame = r.render(expression, pose, 512, 512)  # uint8 (H,W,3)

Frames are rendered by :func:`nerfvc.render.fast.render_frame` (the same model, evaluated at far fewer
points); ``reference=True`` renders every ray with ``PortraitNeRF.render_rays`` exactly as in training. A wink
is drawn by halves (:mod:`nerfvc.render.halves`), then the reference texture is blended into the head
(:mod:`nerfvc.render.references`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

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
from nerfvc.render.fast import FastRenderConfig, FrameHeads, FrameRender, frame_heads, render_frame, supports
from nerfvc.render.halves import FaceHalves, load_face_halves
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.rays import pixel_rays
from nerfvc.render.references import (
    NEAREST_REFERENCES,
    PreparedReference,
    ReferenceFrames,
    agreement_sigma_px,
    blend_references,
    prepare_reference,
    reference_key,
)
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
    return dirs, uv, float_image(background, width, height, device).reshape(-1, 3)


def float_image(
    image: np.ndarray, width: int, height: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """An uint8 image (H,W,3) resized to ``width`` x ``height`` (area average down, bicubic up) → float
    (height,width,3) in [0,1]."""
    im = Image.fromarray(image)
    if im.size != (width, height):
        im = im.resize(
            (width, height), Image.Resampling.BOX if width < im.size[0] else Image.Resampling.BICUBIC
        )
    return torch.from_numpy(np.asarray(im).copy()).to(device).float() / 255


class RenderedView(NamedTuple):
    """A rendered frame: colour (H,W,3) float in [0,1] and the head layer's opacity (H,W) it was composited
    with (the references change only colour)."""

    image: torch.Tensor
    opacity: torch.Tensor


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
        references: ReferenceFrames | None = None,
        halves: FaceHalves | None = None,
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
        # real enrollment frames blended into the head (nerfvc.render.references); None: the render alone
        self.references = references
        self._reference_keys = torch.zeros(0)  # (K,D) reference_key of each reference
        if references is not None:
            if references.inputs.shape[1] != model.input_dim:
                raise ModelMismatchError(
                    f"the reference frames have {references.inputs.shape[1]} inputs, the model takes "
                    f"{model.input_dim}"
                )
            inputs = model.within_training_range(references.inputs.to(self.device))
            with torch.no_grad():
                self._reference_keys = reference_key(model, inputs, references.poses.to(self.device))
        # per output size: each reference used so far, prepared (prepare_reference) at that size
        self._prepared: dict[tuple[int, int], dict[int, PreparedReference]] = {}
        # the person's face model's mirror geometry: a wink is drawn by halves (None: as the model draws it)
        if halves is not None and halves.basis.shape[1] != model.cfg.expression_dim:
            raise ModelMismatchError(
                f"the face model has {halves.basis.shape[1]} expression coefficients, the NeRF takes "
                f"{model.cfg.expression_dim}"
            )
        self.halves = halves

    @classmethod
    def from_model_dir(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        verify: bool = True,
        samples: tuple[int, int] | None = None,
        reference: bool = False,
        references: bool = True,
        halves: bool = True,
    ) -> Renderer:
        """Load a MODEL directory (checking its fingerprint when ``verify``); ``references``: blend its
        reference frames into the head when it has them; ``halves``: draw winks by halves when it has a
        face-mesh model."""
        configure_threads()
        model, camera, bg = load_nerf(path, verify=verify)
        refs = ReferenceFrames.load(path) if references else None
        mirror = load_face_halves(path) if halves else None
        return cls(
            model, camera, bg, device, samples=samples, reference=reference, references=refs, halves=mirror
        )

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

    def render_float(
        self, expression: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor, width: int, height: int
    ) -> torch.Tensor:
        """Expression (E,) and pose (12,) → image (H,W,3) float in [0,1]."""
        return self.render_with_opacity(expression, pose, width, height)[0]

    @torch.inference_mode()
    def render_poses(
        self, expression: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor, width: int, height: int
    ) -> list[RenderedView]:
        """Expression (E,) and poses (K,12) → K views, each image as :meth:`render_float` draws it; the
        expression's head fields are built once for all of them (a sender searching a frame's pose renders
        one expression many times)."""
        raw, expr = self._inputs(expression)
        heads = None if self.reference else frame_heads(self.model, expr, height, width, self.fast)
        return [self._render_pose(raw, expr, self._pose(p), width, height, heads) for p in poses]

    @torch.inference_mode()
    def render_with_opacity(
        self, expression: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor, width: int, height: int
    ) -> RenderedView:
        """Expression (E,) and pose (12,) → image (H,W,3) float in [0,1] and the head layer's opacity (H,W)
        it was composited with (the references change only colour)."""
        raw, expr = self._inputs(expression)
        return self._render_pose(raw, expr, self._pose(pose), width, height)

    def _inputs(self, expression: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame's inputs (E,) → as given (1,E) and within the training range when the renderer clamps
        them (1,E); :class:`InputError` if they are not the model's length or not finite."""
        raw = torch.as_tensor(np.asarray(expression, np.float32), device=self.device).reshape(1, -1)
        if raw.shape[1] != self.expression_dim:
            raise InputError(f"expression has {raw.shape[1]} values, the model expects {self.expression_dim}")
        if not torch.isfinite(raw).all():  # the kernels index by them
            raise InputError("the expression and the pose must be finite numbers")
        return raw, self.model.within_training_range(raw) if self.expression_range else raw

    def _pose(self, pose: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A pose (12,) → (1,12) on the device; :class:`InputError` if it is not finite."""
        pos = torch.as_tensor(np.asarray(pose, np.float32), device=self.device).reshape(1, 12)
        if not torch.isfinite(pos).all():  # the kernels index by it
            raise InputError("the expression and the pose must be finite numbers")
        return pos

    def _render_pose(
        self,
        raw: torch.Tensor,
        expr: torch.Tensor,
        pos: torch.Tensor,
        width: int,
        height: int,
        heads: FrameHeads | None = None,
    ) -> RenderedView:
        """Inputs as given and clamped (1,E) each, pose (1,12) → the view (``heads``: :func:`frame_heads` of
        ``expr`` at this size, when built already)."""
        frame = self._render_layers(expr, pos, width, height, heads=heads)
        if self.halves is not None:
            frame = self._with_halves(frame, raw, pos, width, height)
        img = frame.rgb.clamp(0, 1).reshape(height, width, 3)
        if self.references is not None:
            img = self._with_references(img, frame, expr, pos, width, height)
        return RenderedView(img, frame.head_alpha.view(height, width))

    def _render_layers(
        self,
        expr: torch.Tensor,
        pos: torch.Tensor,
        width: int,
        height: int,
        box: tuple[int, int, int, int] | None = None,
        heads: FrameHeads | None = None,
    ) -> FrameRender:
        """Inputs (1,E+T) and pose (1,12) → the frame with its head opacity and depth (the frame renderer,
        or every ray as in training when ``reference``); ``box`` (y0, y1, x0, x1): only those pixels of it,
        rendered as the whole frame would be (row-major, (y1−y0)·(x1−x0) of each); ``heads``: the frame
        renderer's :func:`frame_heads` of these inputs at this size, when built already."""
        dirs, uv, bg = self._rays(width, height)
        cfg = self.fast
        if box is not None:
            y0, y1, x0, x1 = box
            dirs, uv, bg = (
                t.view(height, width, -1)[y0:y1, x0:x1].reshape(-1, t.shape[-1]) for t in (dirs, uv, bg)
            )
            # the whole frame's proposal fields and coarse pixel stride, not the box's (a small box would take
            # a denser coarse pass than the frame's)
            side = max(y1 - y0, x1 - x0)
            stride = cfg.coarse_stride(height, width)
            cfg = dataclasses.replace(
                cfg, proposal=cfg.proposal_for(height, width), coarse_size=max(1, round(side / stride))
            )
            height, width = y1 - y0, x1 - x0
        if not self.reference:
            return render_frame(self.model, dirs, uv, bg, height, width, expr, pos, cfg, heads)
        outs = [
            self.model.render_rays(
                dirs[i : i + self.chunk],
                uv[i : i + self.chunk],
                expr,
                pos,
                bg[i : i + self.chunk],
                samples=self.samples,
            )
            for i in range(0, dirs.shape[0], self.chunk)
        ]
        return FrameRender(*(torch.cat([o[k] for o in outs]) for k in ("rgb", "head_alpha", "head_depth")))

    def _with_halves(
        self, frame: FrameRender, raw: torch.Tensor, pos: torch.Tensor, width: int, height: int
    ) -> FrameRender:
        """``frame`` with each eye region drawn from its symmetric code, feathered in, when the raw inputs
        (1,E+T) wink (:class:`FaceHalves`); else ``frame`` itself."""
        assert self.halves is not None
        e = self.model.cfg.expression_dim
        expression = raw[0, :e].cpu().numpy()
        codes = self.halves.symmetric_codes(expression)
        if codes is None:
            return frame
        cam = self.camera.scaled(width, height)
        regions = self.halves.region_boxes(expression, pos[0].cpu().numpy(), cam)
        boxes = {s: b for s, r in regions.items() if (b := r.pixels(height, width)) is not None}
        weights = {
            s: torch.from_numpy(r.weights(height, width)).float().to(self.device) for s, r in regions.items()
        }
        # (H,W) both regions' weights, to share the pixels where they overlap
        total = torch.zeros(height, width, device=self.device)
        for side, (y0, y1, x0, x1) in boxes.items():
            total[y0:y1, x0:x1] += weights[side]
        base = [t.view(height, width, -1) for t in frame]  # rgb (H,W,3), opacity and depth (H,W,1)
        out = [t.clone() for t in base]
        for side, (y0, y1, x0, x1) in boxes.items():
            inputs = raw.clone()
            inputs[0, :e] = torch.from_numpy(codes[side]).to(raw)
            if self.expression_range:
                inputs = self.model.within_training_range(inputs)
            part = self._render_layers(inputs, pos, width, height, (y0, y1, x0, x1))
            w = (weights[side] / total[y0:y1, x0:x1].clamp(min=1.0))[..., None]  # (h,w,1)
            for o, old, new in zip(out, base, part, strict=True):
                o[y0:y1, x0:x1] += w * (new.view(y1 - y0, x1 - x0, -1) - old[y0:y1, x0:x1])
        rgb, alpha, depth = out
        return FrameRender(rgb.reshape(-1, 3), alpha.reshape(-1), depth.reshape(-1))

    def _with_references(
        self,
        img: torch.Tensor,
        frame: FrameRender,
        expr: torch.Tensor,
        pos: torch.Tensor,
        width: int,
        height: int,
    ) -> torch.Tensor:
        """``img`` (H,W,3) with the nearest reference frames' texture blended into its head."""
        key = reference_key(self.model, expr, pos)  # (1,D)
        nearest = ((self._reference_keys - key) ** 2).sum(1).argsort()[:NEAREST_REFERENCES].tolist()
        refs = [self._prepared_reference(k, width, height) for k in nearest]
        dirs = self._rays(width, height)[0]  # (H·W,3), z = 1: the surface point is dirs · depth
        points = (dirs * frame.head_depth[:, None]).view(height, width, 3)
        cam = self.camera.scaled(width, height)
        alpha = frame.head_alpha.view(height, width)
        intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)
        out = blend_references(
            img, alpha, points, pos[0], refs, intrinsics, agreement_sigma_px(width, height)
        )
        return out.clamp(0, 1)

    @torch.inference_mode()
    def prepare_references(self, width: int, height: int) -> None:
        """Prepare every reference for frames of this size now (each otherwise costs one render the first
        time a frame of this size uses it: a live receiver does this before its call)."""
        for k in range(len(self.references or ())):
            self._prepared_reference(k, width, height)

    def _prepared_reference(self, k: int, width: int, height: int) -> PreparedReference:
        """Reference ``k`` at this size with its head depth as this model renders it (once per size)."""
        prepared = self._prepared.setdefault((width, height), {})
        if k not in prepared:
            assert self.references is not None
            inputs = self.model.within_training_range(self.references.inputs[k : k + 1].to(self.device))
            pose = self.references.poses[k : k + 1].to(self.device)
            depth = self._render_layers(inputs, pose, width, height).head_depth.view(height, width)
            image = float_image(self.references.images[k].numpy(), width, height, self.device)
            prepared[k] = prepare_reference(image, depth, pose[0], agreement_sigma_px(width, height))
        return prepared[k]

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
