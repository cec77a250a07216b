"""The sender's analysis by synthesis: move each frame's expression so that the person's NeRF, rendered
small, matches the camera frame — as a classic encoder chooses what it sends by looking at its own decoder's
picture rather than at a proxy.

The tracker fits the expression to 478 landmarks; the NeRF was trained on those fits but draws what it
learned they stood for on the training frames. On held-out frames the two drift apart (an outline a pixel or
two off, a mouth a little too closed): the expression that renders the frame best is near the tracker's, not
at it. The sender holds the same model as the receiver, so it can search for it: L-BFGS on the normalised
expression offset, a robust (Charbonnier) photometric loss at ``size`` px through the training renderer
(:meth:`~nerfvc.render.model.PortraitNeRF.render_rays`), a small pull toward the tracker's values. The pose
and the torso shift stay as tracked. Nothing changes at the receiver or in the bitstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nerfvc.errors import InputError
from nerfvc.pipeline.pose_refine import camera_target, check_clip
from nerfvc.render.rays import intersect_box, to_canonical
from nerfvc.render.renderer import Renderer, frame_rays
from nerfvc.train.dataset import parse_size


@dataclass(frozen=True)
class RefineConfig:
    """How hard the sender searches for each frame's expression (docs/face.md "Refining at the sender")."""

    iterations: int = 10  # L-BFGS iterations per frame (0 = send the tracker's fit)
    size: int = 96  # longer side of the picture the fit renders and compares, px
    # weight of the mean squared offset (in training stds) against the picture error (below): 0.1 beat 1e-3 on
    # all 8 shared clips with the squared error (PSNR 16 of 16 points, CSIM lost 2× less; docs/face.md)
    prior: float = 0.1
    # refine the first ``dims`` expression coefficients only (0: all): the major PCA components, which the
    # codec quantizes finely enough to carry the change (docs/face.md)
    dims: int = 16
    # the picture error: "l1" (Charbonnier, ε = 0.01) or "mse"; l1 beat mse on CSIM, LPIPS and DISTS on most
    # of the 8 shared clips' 16 points for 0.06 dB of PSNR (docs/face.md)
    loss: str = "l1"


class FeatureRefiner:
    """Refines one frame's features at a time against its camera frame (module docstring)."""

    def __init__(self, renderer: Renderer, config: RefineConfig | None = None) -> None:
        self.config = config or RefineConfig()
        if self.config.iterations < 0:
            raise InputError(f"refine: need iterations >= 0, got {self.config.iterations}")
        if self.config.loss not in ("l1", "mse"):
            raise InputError(f"refine: loss must be 'l1' or 'mse', got {self.config.loss!r}")
        self.model = renderer.model
        cam = renderer.camera
        self.width, self.height = parse_size(self.config.size, cam.width, cam.height)
        # (P,3), (P,2), (P,3) with P = width·height; made outside inference mode (autograd keeps them)
        self.dirs, self.uv, self.background = frame_rays(
            cam, renderer.background, self.width, self.height, renderer.device
        )

    def _target(self, frame: np.ndarray) -> torch.Tensor:
        """A camera frame (H,W,3) uint8 cropped to the camera's aspect → colours (P,3) in [0,1]."""
        small = camera_target("refine", frame, self.width, self.height)
        return torch.from_numpy(small).to(self.dirs.device).float().reshape(-1, 3) / 255

    def refine(self, frame: np.ndarray, features: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """One frame: camera frame (H,W,3) uint8, tracked features (D,) (expression, then the torso shift),
        pose (12,) → features (D,) float32 with the expression refined."""
        features = np.asarray(features, np.float32)
        if self.config.iterations == 0:
            return features.copy()
        model, dev = self.model, self.dirs.device
        e_dim = model.cfg.expression_dim
        if features.shape != (model.input_dim,) or np.shape(pose) != (12,):
            raise InputError(
                f"refine: features {features.shape} and pose {np.shape(pose)} do not fit the model "
                f"({model.input_dim},) and (12,)"
            )
        target = self._target(frame)
        feats = torch.from_numpy(features).to(dev)[None]  # (1,D)
        pose_t = torch.as_tensor(np.asarray(pose, np.float32), device=dev)[None]  # (1,12)
        # rays that miss the head's box draw the same with any expression: leave them out of the search
        origin, direction = to_canonical(self.dirs, pose_t)
        hit = intersect_box(origin, direction, model.head_lo, model.head_hi)[2]
        idx = hit.nonzero(as_tuple=True)[0]  # (R,)
        if idx.numel() == 0:
            return features.copy()
        dirs, uv, bg, gt = self.dirs[idx], self.uv[idx], self.background[idx], target[idx]
        # 100 × the whole frame's MSE, or 10 × its mean Charbonnier error (alike at ~0.05 per channel):
        # the other rays' error is constant
        scale = (10.0 if self.config.loss == "l1" else 100.0) / self.dirs.shape[0]
        k = min(self.config.dims or e_dim, e_dim)
        offset = torch.zeros(k, device=dev, requires_grad=True)  # in training stds
        tail = feats[:, k:]  # (1,D-k) the other coefficients and the torso shift, as tracked

        def inputs() -> torch.Tensor:
            return torch.cat([feats[:, :k] + offset * model.expr_std[:k], tail], 1)  # (1,D)

        def closure() -> torch.Tensor:
            held = model.within_training_range(inputs())  # (1,D) as the receiver renders it
            rgb = model.render_rays(dirs, uv, held, pose_t, bg)["rgb"]  # (R,3)
            sq = (rgb - gt).square()  # (R,3)
            err = (sq + 1e-4).sqrt().sum() if self.config.loss == "l1" else sq.sum()
            loss = err * scale + self.config.prior * offset.square().mean()
            (offset.grad,) = torch.autograd.grad(loss, [offset])
            return loss.detach()

        opt = torch.optim.LBFGS(
            [offset], lr=1.0, max_iter=self.config.iterations, line_search_fn="strong_wolfe"
        )
        with torch.enable_grad(), torch.inference_mode(False):
            opt.step(closure)
            return inputs().detach()[0].cpu().numpy().astype(np.float32)

    def refine_clip(
        self,
        frames: np.ndarray,
        features: np.ndarray,
        pose: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Every frame of a clip: frames (N,H,W,3) uint8, features (N,D), poses (N,12) → features (N,D)."""
        check_clip("refine", frames, features, pose)
        out = np.empty((len(features), np.shape(features)[1]), np.float32)
        for i in range(len(frames)):
            out[i] = self.refine(frames[i], features[i], pose[i])
            if progress:
                progress(i + 1, len(frames))
        return out
