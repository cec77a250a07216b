"""Training: DATASET → MODEL within a wall-clock budget, resumable, then scored on the held-out frames.

``minutes`` bounds the whole call (loading, training, writing the model, scoring): the loop gets what is
left after loading minus ``score_share`` of the budget, and scoring (at most ``score_size`` px, frames
evenly spread) stops when the budget is spent. The occupancy grid starts as the visual hull of the training
frames' head masks, so empty space is skipped from the first step; SIGTERM checkpoints like Ctrl-C.

Loss (paper Eq. 4-5 plus mask supervision): ``|C_f − I|² + |C_c − I|²`` over a batch of rays, plus
``mask_weight`` × the squared error of the head opacity (coarse and fine) against the head mask and of the
torso alpha against the torso mask (outside the head); with ``seam_band`` the head opacity is left free
near the masks' head/torso boundary (:func:`head_torso_band`). Rays are drawn from random training frames, a
``person_frac`` share of them inside each frame's (dilated) person box.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nerfvc.argtypes import rate_list
from nerfvc.codec.roundtrip import coded_features
from nerfvc.datasetdir import dataset_split, read_manifest
from nerfvc.errors import InputError
from nerfvc.face.segment import HEAD, TORSO
from nerfvc.field.fields import density_kernel, field_settings, mlp_dtype
from nerfvc.field.fused import denormals_flushed, fused_density_available
from nerfvc.machine import PRECISIONS, LoopTrial
from nerfvc.metrics import psnr, psnr_from_mse, ssim
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.rays import intersect_box, pixel_dirs, to_canonical
from nerfvc.render.references import REFERENCE_COUNT
from nerfvc.render.renderer import Renderer
from nerfvc.render.threads import configure_threads
from nerfvc.train.checkpoint import load_checkpoint, save_checkpoint
from nerfvc.train.dataset import PortraitDataset, load_dataset, ray_batch
from nerfvc.train.export import dataset_codec_tables, write_model_dir

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    iters: int = 100_000  # iteration cap (the learning-rate schedule targets it)
    stop_at: int | None = (
        None  # end this run at this step (the schedule still targets ``iters``); rerun resumes
    )
    minutes: float | None = None  # wall-clock budget of the whole call (loading, training, writing, scoring)
    # rays per training step: 2048 makes ~1.7× the steps of 4096 in a time budget; 10 minutes on one core, 6
    # of the 8 shared clips (benchmarks/results/ab_10min_batch-rays-2048_256.md): PSNR +0.2 dB (better on
    # 10 of 12 points), CSIM +0.011 (10), LPIPS 8, DISTS 8, PRMSE 9, AUCON worse on all 12 (−0.013); german
    # alone, side by side: PSNR +0.25 dB, LPIPS +0.004 and CSIM −0.012 (docs/nerf.md); german and obama again
    # (ab_10min_batch-rays-2048_german-obama_256.md): PSNR +0.3 dB, CSIM +0.012, better on 4 of 4 points
    batch_rays: int = 2048
    lr: float = 1e-2
    lr_final: float = 1e-3  # exponential decay to this by the end (iterations or minutes, whichever first)
    person_frac: float = 0.7
    error_frac: float = 0.0  # share of each batch drawn from the error map (RaySampler; 0 = off)
    # share of each batch drawn inside each frame's face box (the face-mesh landmarks' bounding box: brows,
    # eyes, nose, mouth, jaw), the rest as without it (RaySampler; 0 = off). 0.3 on the 8 shared clips (10
    # minutes, 512², 16 points, against the default's models): PSNR +0.19 dB (better on 11), CSIM +0.004
    # (11), PRMSE 11, but LPIPS +0.0023 and DISTS +0.0020 (worse on 14), 11% fewer steps (docs/nerf.md
    # "Rays drawn on the face")
    face_frac: float = 0.0
    mask_weight: float = 0.1
    # half-width, as a share of the frame's longer side, of the band along the masks' head/torso boundary
    # where the head opacity is not held to the mask (0 = held everywhere): that boundary is the masks' rule
    # (the jaw line, docs/face.md), not an edge in the frame, so the photometric loss places the layers' seam
    # there (benchmarks/seam.py). 0.015 against 0 on the 8 shared clips side by side (10 minutes, 512², 20
    # points, two draws of bob and d6): PSNR +0.11 dB (better on 15), SSIM 15, LPIPS 18, DISTS 11, CSIM level,
    # PRMSE +0.01° (docs/nerf.md "Seams where the head layer ends")
    seam_band: float = 0.015
    coarse_weight: float = 1.0
    # mip-NeRF 360's distortion loss on both head passes' weights (0 = off): concentrates each ray's weight
    # on a sharp surface, so the frame renderer's rays turn opaque within fewer of their samples. 0.01 on the
    # 8 shared clips: 22% faster frames, CSIM -0.009 (glasses ghost); 0.005: CSIM worse on 12 of 16 points;
    # 0.002: 5% faster, quality level
    # (docs/nerf.md "Distortion loss")
    distortion_weight: float = 0.0
    # Zip-NeRF's normalised weight decay on the head fields' hash tables (PortraitNeRF.grid_decay; 0 = off).
    # 0.1 on 3 clips: LPIPS worse on 6 of 6 points; 0.01 on 8: LPIPS worse on 14 of 16 (docs/nerf.md)
    grid_decay: float = 0.0
    # weight of the blend shapes' roughness (PortraitNeRF.blend_roughness: squared neighbour differences of
    # the dense expression grids; 0 = off). 0.01 on 8 clips at 512²: mixed (docs/nerf.md)
    blend_smoothness: float = 0.0
    # share of the schedule over which the fine head's hash levels open coarse to fine, from the coarser
    # half to all of them (0 = all from the start; HeadField.set_level_window)
    level_anneal: float = 0.0
    occupancy_warmup: int = 64  # field-driven occupancy updates from here on (the mask hull prunes from 0)
    occupancy_every: int = 16
    settings_trial_at: int = 128  # steps timed for the MLP precision and density kernel start here
    checkpoint_seconds: float = 60.0
    # real training frames kept in MODEL for the receiver's head texture (nerfvc.render.references; 0 = none)
    references: int = REFERENCE_COUNT
    eval_frames: int = 25  # held-out frames scored at the end (evenly spaced; 0 = none, -1 = all)
    score_size: int = 256  # longer side (px) the held-out frames are scored at (at most the dataset's)
    score_share: float = 0.1  # share of a ``minutes`` budget kept for writing the model and scoring
    torso_motion: bool = True  # drive the torso by the sender's torso shift when the dataset has one
    # ... and let that shift (with the band's halves, when measured) enter the torso field's MLPs, not only
    # move its lookup (docs/nerf.md "The torso's turn")
    torso_inputs: bool = True
    perceptual_weight: float = 0.0  # LPIPS (AlexNet) on square head patches, late in training (0 = off)
    perceptual_from: float = 0.5  # share of the schedule after which every 2nd step is a patch step
    patch_size: int = 64  # side (px, at the training size) of a perceptual patch: patch_size² rays
    # Gaussian noise added to each training ray's normalised expression (in units of the training split's
    # per-dimension std; 0 = off): the fields learn to respond smoothly to expressions between and beyond
    # the training ones instead of memorising each frame's code
    expression_noise: float = 0.0
    expression_noise_decay: bool = False  # the noise falls linearly to 0 over the schedule (sharp at the end)
    # how the expression inputs are normalised: "dim" (each dimension to unit spread) or "global" (all by
    # the largest dimension's std, so the minor PCA components stay small)
    expression_scale: str = "dim"
    # per-frame latent codes, training only (NeRF-W's appearance embeddings): each training frame's own
    # offset of the consistency code (which conditions head colour and the torso), zero-mean over the
    # training frames and pulled toward zero by ``frame_code_weight``; the receiver draws every frame with
    # offset zero, the average training frame. Lighting and other per-frame nuisance go there instead of
    # being memorised per expression code.
    frame_codes: bool = False
    frame_code_weight: float = 1e-3  # weight of the offsets' mean squared norm in the loss
    # share of each batch's rays whose expression input (and torso shift) is what the receiver decodes for
    # their frame: the training clip through the real feature codec at one of the --coded-kbps rates (0 =
    # off), so the fields learn the inputs they will be sent, not only the tracker's raw fits
    coded_share: float = 0.0
    coded_kbps: str = "0.8,1.5,3"  # comma-separated target rates of those reconstructions
    seed: int = 0  # seeds the initialisation and every step's ray sample
    progress: bool = True


@dataclass
class TrainResult:
    fingerprint: str
    steps: int
    seconds: float  # wall clock of the training loop (all runs, when resumed)
    total_seconds: float  # wall clock of this call: loading, training, writing and scoring
    cpu_seconds: float  # CPU time of this process for the loop (robust to other jobs on a shared machine)
    metrics: dict[str, float] = field(default_factory=dict)


def fit_head_box(ds: PortraitDataset, lo: list[float], hi: list[float], max_pad: float = 2.0) -> tuple:
    """Grow the head box about its centre until ≥ 99.5% of head-mask pixels' rays hit it (8 frames)."""
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    centre, half = (lo_t + hi_t) / 2, (hi_t - lo_t) / 2
    frames = ds.train_idx[np.linspace(0, len(ds.train_idx) - 1, 8).astype(int)]
    ys, xs, fs = [], [], []
    for f in frames:
        y, x = torch.nonzero(ds.masks[f] == 2, as_tuple=True)
        ys.append(y)
        xs.append(x)
        fs.append(torch.full_like(y, int(f)))
    y, x, f = torch.cat(ys), torch.cat(xs), torch.cat(fs)
    if y.numel() == 0:
        return lo, hi, 1.0
    dirs, _ = pixel_dirs(ds.camera, x.float() + 0.5, y.float() + 0.5)
    o, d = to_canonical(dirs, ds.pose[f])
    pad = 1.0
    while pad < max_pad:
        _, _, hit = intersect_box(o, d, centre - half * pad, centre + half * pad)
        if hit.float().mean() >= 0.995:
            break
        pad += 0.1
    return (centre - half * pad).tolist(), (centre + half * pad).tolist(), pad


def head_hull(
    ds: PortraitDataset,
    lo: list[float],
    hi: list[float],
    res: int,
    frames: int = 24,
    margin: float = 0.1,
    tolerance: float = 0.1,
) -> torch.Tensor | None:
    """Visual hull of the head masks on a res³ grid over the box [lo, hi] → (res,res,res) bool, or None when
    no training frame has a head mask. A cell is kept if, in at most ``tolerance`` of the ``frames`` training
    frames (evenly spread) that see it, it projects outside the head mask dilated by ``margin`` of the image
    size (so a few mis-tracked frames or mask errors carve nothing)."""
    picks = ds.train_idx[np.linspace(0, len(ds.train_idx) - 1, min(frames, len(ds.train_idx))).astype(int)]
    r = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    cells = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # (C,3) as OccupancyGrid
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    pts = lo_t + cells * (hi_t - lo_t)  # (C,3) canonical
    cam = ds.camera
    k = 2 * max(1, round(margin * max(cam.width, cam.height))) + 1
    outside = torch.zeros(pts.shape[0])
    seen = torch.zeros(pts.shape[0])
    used = 0
    for f in picks:
        head = (ds.masks[f] == 2).float()
        if not head.any():
            continue
        used += 1
        # dilation by a k×k square as two 1-d max pools (a k×k pool costs k² per pixel: ~3 s per 512² frame)
        wide = F.max_pool2d(head[None, None], (k, 1), 1, (k // 2, 0))
        inside = F.max_pool2d(wide, (1, k), 1, (0, k // 2))[0, 0] > 0  # (H,W)
        rot, t = ds.pose[f, :9].view(3, 3), ds.pose[f, 9:12]
        xc = pts @ rot.t() + t  # (C,3) camera space
        z = xc[:, 2].clamp(min=1e-6)
        u, v = cam.fx * xc[:, 0] / z + cam.cx, cam.fy * xc[:, 1] / z + cam.cy
        visible = (xc[:, 2] > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        ui, vi = u.long().clamp(0, cam.width - 1), v.long().clamp(0, cam.height - 1)
        seen += visible.float()
        outside += (visible & ~inside[vi, ui]).float()
    if used == 0:
        return None
    return ((seen > 0) & (outside <= tolerance * seen)).view(res, res, res)


def _mask_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box ``(y0, y1, x0, x1)`` (end exclusive) of a boolean mask (H,W); None when it is empty."""
    y, x = torch.nonzero(mask, as_tuple=True)
    if y.numel() == 0:
        return None
    return int(y.min()), int(y.max()) + 1, int(x.min()), int(x.max()) + 1


class RaySampler:
    """Random training rays, biased toward each frame's person box, with ``face_frac`` > 0 toward its face
    (the face-mesh landmarks' box, where identity lives) and, with ``error_frac`` > 0, toward where
    the model is still wrong: an error map (``error_cells``² cells per training frame, the running mean of
    the fine squared error of every ray that fell in the cell, :meth:`record`) from which that share of each
    batch is drawn, cells in proportion to their error (instant-ngp's error-map sampling)."""

    def __init__(
        self,
        ds: PortraitDataset,
        person_frac: float,
        error_frac: float = 0.0,
        error_cells: int = 32,
        seam_band: float = 0.0,
        face_frac: float = 0.0,
    ):
        self.ds = ds
        if face_frac > 0 and ds.face_boxes is None:
            raise InputError(f"{ds.root}: the features have no landmarks, so no face box to draw rays from")
        self.face_frac = face_frac
        # (N,H,W) bool: the pixels near each training frame's head/torso boundary (None: no band)
        self.seam = head_torso_band(ds, seam_band) if seam_band > 0 else None
        self.person_frac = person_frac
        self.error_frac = error_frac
        self.error_cells = error_cells
        # (n_train·c·c,) running mean error per cell; starts equal, so the first draws are uniform
        self.error = torch.ones(len(ds.train_idx) * error_cells**2) if error_frac > 0 else None
        h, w = ds.masks.shape[1:]
        my, mx = int(0.05 * h), int(0.05 * w)
        boxes = []
        for f in ds.train_idx:
            box = _mask_box(ds.masks[f] > 0)
            if box is None:
                boxes.append([0, h, 0, w])
                continue
            y0, y1, x0, x1 = box
            boxes.append([max(y0 - my, 0), min(y1 + my, h), max(x0 - mx, 0), min(x1 + mx, w)])
        self.boxes = torch.tensor(boxes, dtype=torch.float32)  # (n_train,4) y0,y1,x0,x1
        self.train_idx = torch.from_numpy(ds.train_idx)
        # (n_train,4) y0,y1,x0,x1 of each training frame's face (None: no face share)
        self.face_boxes = (
            ds.face_boxes[self.train_idx] if face_frac > 0 and ds.face_boxes is not None else None
        )

    @functools.cached_property
    def head_boxes(self) -> torch.Tensor:
        """(n_train,4) y0,y1,x0,x1 of each training frame's head (label 2), else its person box; computed on
        the first :meth:`patch` (only perceptual training draws patches)."""
        head = [_mask_box(self.ds.masks[f] == 2) for f in self.ds.train_idx]
        return torch.tensor(
            [list(b) if b is not None else self.boxes[i].long().tolist() for i, b in enumerate(head)],
            dtype=torch.long,
        )

    def patch(self, size: int) -> dict[str, torch.Tensor]:
        """The ``size``×``size`` rays of one square block of a random training frame, its centre inside the
        frame's head box (row-major: ``rgb`` reshapes to (size, size, 3))."""
        h, w = self.ds.masks.shape[1:]
        size = min(size, h, w)
        k = int(torch.randint(0, len(self.train_idx), ()))
        y0, y1, x0, x1 = (int(v) for v in self.head_boxes[k])
        cy = y0 + int(torch.randint(0, max(y1 - y0, 1), ()))
        cx = x0 + int(torch.randint(0, max(x1 - x0, 1), ()))
        top, left = min(max(cy - size // 2, 0), h - size), min(max(cx - size // 2, 0), w - size)
        yy, xx = torch.meshgrid(torch.arange(top, top + size), torch.arange(left, left + size), indexing="ij")
        f, y, x = self.train_idx[k].repeat(size * size), yy.reshape(-1), xx.reshape(-1)
        return self._with_band(ray_batch(self.ds, f, y, x), f, y, x)

    def _with_band(
        self, batch: dict[str, torch.Tensor], f: torch.Tensor, y: torch.Tensor, x: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``batch`` with ``seam`` (R,) bool when there is a band: its rays near the head/torso boundary."""
        if self.seam is not None:
            batch["seam"] = self.seam[f, y, x]
        return batch

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` training rays (:func:`ray_batch`), plus ``cell`` (R,): each ray's error-map cell."""
        ds = self.ds
        h, w = ds.masks.shape[1:]
        c = self.error_cells
        n_err = round(n * self.error_frac) if self.error is not None else 0
        n -= n_err
        k = torch.randint(0, len(self.train_idx), (n,))
        b = self.boxes[k]
        # each ray's box: the face's (a face_frac share), else the person's (person_frac), else the frame
        frame = torch.tensor([0.0, h, 0.0, w]).expand(n, 4)
        b = torch.where((torch.rand(n) < self.person_frac)[:, None], b, frame)
        if self.face_boxes is not None:
            b = torch.where((torch.rand(n) < self.face_frac)[:, None], self.face_boxes[k], b)
        y0, y1, x0, x1 = b.unbind(1)
        y = (y0 + torch.rand(n) * (y1 - y0)).long().clamp(0, h - 1)
        x = (x0 + torch.rand(n) * (x1 - x0)).long().clamp(0, w - 1)
        if (
            self.error is not None and n_err
        ):  # cells in proportion to their error, a uniform pixel inside each
            cell = torch.multinomial(self.error, n_err, replacement=True)  # (n_err,) flat indices
            cy, cx = (cell // c) % c, cell % c
            k = torch.cat([k, cell // (c * c)])
            y = torch.cat([y, ((cy + torch.rand(n_err)) * h / c).long().clamp(0, h - 1)])
            x = torch.cat([x, ((cx + torch.rand(n_err)) * w / c).long().clamp(0, w - 1)])
        batch = self._with_band(ray_batch(ds, self.train_idx[k], y, x), self.train_idx[k], y, x)
        batch["cell"] = (k * c + y * c // h) * c + x * c // w
        return batch

    def record(self, cell: torch.Tensor, error: torch.Tensor, momentum: float = 0.9) -> None:
        """Blend the per-ray squared errors ``error`` (R,) of rays in error-map cells ``cell`` (R,) into the
        map: a cell's value moves toward the mean error of its rays in this batch (no-op without a map)."""
        if self.error is None:
            return
        total = torch.zeros_like(self.error).index_add_(0, cell, error.detach().float())
        count = torch.zeros_like(self.error).index_add_(0, cell, torch.ones(len(cell)))
        hit = count > 0
        self.error[hit] = momentum * self.error[hit] + (1 - momentum) * total[hit] / count[hit]
        self.error.clamp_(min=1e-6)  # every cell keeps a chance


MIN_LPIPS_SIZE = 32


def level_window(model: PortraitNeRF, share: float) -> float:
    """The fine head's level window after ``share`` of the annealing: the coarser half of the levels open
    at 0, all of them from 1 on."""
    levels = model.fine.cfg.grid.levels
    start = levels // 2
    return start + (levels - start) * min(1.0, max(0.0, share))


def perceptual_loss(rgb: torch.Tensor, target: torch.Tensor, size: int) -> torch.Tensor:
    """LPIPS (AlexNet, the judge eval uses) between a rendered patch and its ground truth, ``rgb`` and
    ``target`` (size², 3) in [0, 1] → scalar."""
    from nerfvc.eval.lpips import get_model

    a = rgb.reshape(1, size, size, 3).permute(0, 3, 1, 2) * 2 - 1
    b = target.reshape(1, size, size, 3).permute(0, 3, 1, 2) * 2 - 1
    if size < MIN_LPIPS_SIZE:  # AlexNet's strided trunk needs at least this many pixels
        a, b = (torch.nn.functional.interpolate(x, size=MIN_LPIPS_SIZE, mode="bilinear") for x in (a, b))
    return get_model()(a, b).mean()


def head_torso_band(ds: PortraitDataset, share: float) -> torch.Tensor:
    """(N,H,W) bool: in each training frame, the head pixels within ``share`` of the longer side of a torso
    pixel and the torso pixels as near a head pixel (other frames: none)."""
    n, h, w = ds.masks.shape
    radius = max(1, round(share * max(h, w)))
    offsets = np.arange(-radius, radius + 1)
    disc = (offsets[:, None] ** 2 + offsets[None] ** 2 <= radius**2).astype(np.uint8)  # Euclidean, symmetric
    band = torch.zeros(n, h, w, dtype=torch.bool)
    for f in ds.train_idx:
        m = ds.masks[f].numpy()
        head, torso = (m == HEAD).astype(np.uint8), (m == TORSO).astype(np.uint8)
        near = (head & cv2.dilate(torso, disc)) | (torso & cv2.dilate(head, disc))
        band[f] = torch.from_numpy(near.astype(bool))
    return band


def compute_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: TrainConfig) -> tuple:
    """Total loss and the fine photometric MSE (for PSNR)."""
    mse_f = ((out["rgb"] - batch["rgb"]) ** 2).mean()
    mse_c = ((out["rgb_coarse"] - batch["rgb"]) ** 2).mean()
    head_t = (batch["label"] == HEAD).float()
    not_head = 1 - head_t
    torso_t = (batch["label"] == TORSO).float()
    held = 1 - batch["seam"].float() if "seam" in batch else 1.0  # (R,): the head opacity held to the mask
    mask = (held * (out["head_alpha"] - head_t) ** 2).mean() + (
        held * (out["head_alpha_coarse"] - head_t) ** 2
    ).mean()
    mask = mask + (not_head * (out["torso_alpha"] - torso_t) ** 2).sum() / not_head.sum().clamp(min=1)
    loss = mse_f + cfg.coarse_weight * mse_c + cfg.mask_weight * mask
    if cfg.distortion_weight > 0 and "distortion" in out:
        loss = loss + cfg.distortion_weight * out["distortion"]
    return loss, mse_f


def evaluate(
    model: PortraitNeRF,
    ds: PortraitDataset,
    frames: np.ndarray,
    size: tuple[int, int] | None = None,
    deadline: float | None = None,
) -> dict[str, float]:
    """Mean PSNR/SSIM and render time over ``frames`` at ``size`` = (W,H) (default: the dataset's size);
    frames after ``deadline`` (a ``time.perf_counter()`` value) are skipped, the first is always scored."""
    from PIL import Image

    w, h = size or (ds.camera.width, ds.camera.height)
    renderer = Renderer(model, ds.camera, ds.background.numpy())
    ps: list[float] = []
    ss: list[float] = []
    ts: list[float] = []
    for f in frames:
        if ps and deadline is not None and time.perf_counter() > deadline:
            log.warning("scoring stopped at the time budget after %d of %d frames", len(ps), len(frames))
            break
        gt = ds.frames[f].numpy()
        if (w, h) != (ds.camera.width, ds.camera.height):
            gt = np.asarray(Image.fromarray(gt).resize((w, h), Image.Resampling.BOX))
        t = time.perf_counter()
        img = renderer.render(ds.expression[f].numpy(), ds.pose[f].numpy(), w, h)
        ts.append(time.perf_counter() - t)
        ps.append(psnr(img, gt))
        ss.append(ssim(img, gt))
    return {
        "psnr": float(np.mean(ps)),
        "ssim": float(np.mean(ss)),
        "render_s": float(np.median(ts)),
        "frames": len(ps),
    }


def train(
    dataset: str | Path,
    out: str | Path,
    cfg: TrainConfig | None = None,
    model_cfg: ModelConfig | None = None,
    size: str | int | None = None,
) -> TrainResult:
    """Train a model on ``dataset`` and write the MODEL directory ``out`` (resuming from ``out/.train``)."""
    cfg = cfg or TrainConfig()
    mcfg = model_cfg or ModelConfig()
    if cfg.frame_codes and not mcfg.consistency_dim:
        raise InputError("frame codes offset the consistency code: they need --consistency-dim > 0")
    if not 0 <= cfg.coded_share <= 1:
        raise InputError(f"--coded-share must be in [0, 1], got {cfg.coded_share}")
    coded_kbps = rate_list(cfg.coded_kbps, "--coded-kbps")
    t_call = time.perf_counter()
    threads = configure_threads()
    torch.manual_seed(cfg.seed)
    t_load = time.perf_counter()
    ds = load_dataset(dataset, size, torso=cfg.torso_motion)
    log.info(
        "loaded %d frames at %dx%d in %.1f s (%d threads)",
        ds.num_frames,
        ds.camera.width,
        ds.camera.height,
        time.perf_counter() - t_load,
        threads,
    )
    lo, hi, pad = fit_head_box(ds, ds.head_lo, ds.head_hi)
    mcfg.head_lo, mcfg.head_hi = lo, hi
    mcfg.torso_dims = ds.torso_dims
    mcfg.torso.shift_inputs = ds.torso_dims if cfg.torso_inputs else 0
    mcfg.expression_dim = int(ds.expression.shape[1]) - ds.torso_dims
    model = PortraitNeRF(mcfg)
    hull = head_hull(ds, lo, hi, mcfg.occupancy_res)
    if hull is not None:
        model.occupancy.set_prior(hull)
        log.info("occupancy: the head masks' hull keeps %.1f%% of the box", 100 * float(hull.float().mean()))
    train_t = torch.from_numpy(ds.train_idx)
    model.set_normalisation(ds.expression[train_t], ds.pose[train_t], cfg.expression_scale)
    # (num_frames, K): one code per dataset frame; only the training frames' rows are drawn and trained
    codes = nn.Parameter(torch.zeros(ds.num_frames, mcfg.consistency_dim)) if cfg.frame_codes else None
    params = [*model.parameters(), *([codes] if codes is not None else [])]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)  # one kernel for all of Adam: ~5% of a step
    optim = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15, fused=fused)
    ckpt_dir = Path(out) / ".train"
    step, elapsed = 0, 0.0
    if (ckpt_dir / "checkpoint.json").exists():
        state = load_checkpoint(ckpt_dir, model, optim, ds.fingerprint, frame_codes=codes)
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log.info("resuming at step %d (%.0f s trained)", step, elapsed)
    sampler = RaySampler(
        ds, cfg.person_frac, cfg.error_frac, seam_band=cfg.seam_band, face_frac=cfg.face_frac
    )
    total = cfg.minutes * 60 if cfg.minutes else math.inf
    budget = max(total * (1 - cfg.score_share) - (time.perf_counter() - t_call), 1e-3)  # loop, all runs
    train_expr = ds.expression[train_t]
    coded = coded_inputs(ds, coded_kbps) if cfg.coded_share > 0 else None  # (K,F,D)

    def progress() -> float:
        return min(1.0, max(step / cfg.iters, elapsed / budget))

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_dir,
            model,
            optim,
            {
                "step": step,
                "elapsed": elapsed,
                "dataset": ds.fingerprint,
                "train": asdict(cfg),
                "box_pad": pad,
            },
            frame_codes=codes,
        )

    bar = tqdm(total=cfg.iters, initial=step, disable=not cfg.progress, desc="train", dynamic_ncols=True)
    model.train()
    last_ckpt = time.perf_counter()
    t0 = time.perf_counter() - elapsed
    cpu0 = time.process_time()
    stop_at = cfg.stop_at if cfg.stop_at is not None else cfg.iters
    trial, candidates = settings_trial(model, cfg)
    if trial.chosen is not None:
        log.info("training step: %s", trial.chosen)
    on_term = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:  # SIGTERM (a scheduler, `kill`) checkpoints like Ctrl-C
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with denormals_flushed():
            while progress() < 1.0 and step < stop_at:
                torch.manual_seed(cfg.seed * 1_000_003 + step)  # per step: resumed runs continue identically
                for g in optim.param_groups:
                    g["lr"] = cfg.lr * (cfg.lr_final / cfg.lr) ** progress()
                with field_settings(*candidates[trial.name(step)]):
                    if step >= cfg.occupancy_warmup and step % cfg.occupancy_every == 0:
                        model.update_occupancy(train_expr)
                    t_step = time.perf_counter()  # the trial times the step without the update
                    if cfg.level_anneal > 0:
                        model.fine.set_level_window(level_window(model, progress() / cfg.level_anneal))
                    patch = cfg.perceptual_weight > 0 and progress() >= cfg.perceptual_from and step % 2 == 0
                    batch = sampler.patch(cfg.patch_size) if patch else sampler.sample(cfg.batch_rays)
                    offsets = None if codes is None else frame_offsets(codes, batch["frame"], train_t)
                    inputs = batch["expression"]
                    if coded is not None:
                        inputs = mix_coded(inputs, coded, batch["frame"], cfg.coded_share)
                    out_r = model.render_rays(
                        batch["dirs"],
                        batch["uv"],
                        noisy_expression(model, inputs, noise_at(cfg, progress())),
                        batch["pose"],
                        batch["background"],
                        train=True,
                        frame_code=offsets,
                        distortion_loss=cfg.distortion_weight > 0,
                    )
                    loss, mse = compute_loss(out_r, batch, cfg)
                    if cfg.grid_decay > 0:
                        loss = loss + cfg.grid_decay * model.grid_decay()
                    if cfg.blend_smoothness > 0:
                        loss = loss + cfg.blend_smoothness * model.blend_roughness()
                    if offsets is not None:
                        loss = loss + cfg.frame_code_weight * offsets.square().sum(-1).mean()
                    if sampler.error is not None and not patch:
                        sampler.record(batch["cell"], ((out_r["rgb"] - batch["rgb"]) ** 2).mean(-1))
                    if patch:
                        side = math.isqrt(len(batch["rgb"]))
                        loss = loss + cfg.perceptual_weight * perceptual_loss(
                            out_r["rgb"], batch["rgb"], side
                        )
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    optim.step()
                trial.record(step, time.perf_counter() - t_step)
                step += 1
                elapsed = time.perf_counter() - t0
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(
                        loss=f"{loss.item():.4f}",
                        psnr=f"{psnr_from_mse(max(mse.item(), 1e-10)):.2f}",
                        occ=f"{model.occupancy.occupied_fraction:.2f}",
                    )
                if time.perf_counter() - last_ckpt > cfg.checkpoint_seconds:
                    checkpoint()
                    last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        checkpoint()  # rerunning the same command resumes from here
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, on_term)
    bar.close()
    model.fine.set_level_window(None)  # a trained field reads every level
    cpu_seconds = time.process_time() - cpu0
    checkpoint()
    model.eval()
    info = {
        "trained": {
            "steps": step,
            "seconds": round(elapsed, 1),
            "dataset": ds.fingerprint,
            "box_pad": pad,
            "size": [ds.camera.width, ds.camera.height],
            "step_settings": trial.current,
        }
    }
    fp = write_model_dir(out, model, ds.root, info, references=cfg.references)
    metrics: dict[str, Any] = {}
    if cfg.eval_frames and len(ds.test_idx):
        metrics = generalisation_scores(model, ds, cfg.eval_frames, cfg.score_size, deadline=t_call + total)
    return TrainResult(fp, step, elapsed, time.perf_counter() - t_call, cpu_seconds, metrics)


def generalisation_scores(
    model: PortraitNeRF, ds: PortraitDataset, frames: int, size: int, deadline: float | None = None
) -> dict[str, Any]:
    """:func:`evaluate` on ``frames`` evenly spaced held-out frames (-1: all) at ≤ ``size`` px (longer side),
    then on as many training frames: the held-out scores plus ``train_psnr`` and ``generalisation_gap_db``
    (train − held-out PSNR, how well the model carries to expressions and poses it did not see)."""
    k = len(ds.test_idx) if frames < 0 else min(frames, len(ds.test_idx))
    picks = ds.test_idx[np.linspace(0, len(ds.test_idx) - 1, k).astype(int)]
    s = min(1.0, size / max(ds.camera.width, ds.camera.height))
    score_wh = (max(8, round(ds.camera.width * s)), max(8, round(ds.camera.height * s)))
    scores = evaluate(model, ds, picks, score_wh, deadline=deadline)
    n_seen = min(int(scores["frames"]), len(ds.train_idx))
    seen = ds.train_idx[np.linspace(0, len(ds.train_idx) - 1, n_seen).astype(int)]
    train_psnr = evaluate(model, ds, seen, score_wh, deadline=deadline)["psnr"]
    return {
        **scores,
        "size": list(score_wh),
        "train_psnr": train_psnr,
        "generalisation_gap_db": train_psnr - scores["psnr"],
    }


def frame_offsets(codes: torch.Tensor, frames: torch.Tensor, train_frames: torch.Tensor) -> torch.Tensor:
    """Per-ray consistency-code offsets (R,K): the codes (F,K) of the rays' frames (R,), less the mean code
    of the training frames (T,), so that zero, what every frame gets at the receiver, is the average one."""
    return codes[frames] - codes[train_frames].mean(0)


def coded_inputs(ds: PortraitDataset, kbps: list[float]) -> torch.Tensor:
    """Each frame's inputs (F,D) as the receiver decodes them when the training frames are coded at each
    rate in ``kbps`` with the model's own codec (the tables ``codec.json`` will hold) → (K,F,D); frames past
    the training split keep their raw inputs (no ray is drawn from them)."""
    manifest = read_manifest(ds.root)
    tables = dataset_codec_tables(ds.root, ds.torso_dims)
    n = dataset_split(manifest)[0][1]
    code, pose = ds.expression[:n].numpy(), ds.pose[:n].numpy()
    fps = float(manifest.get("fps") or 25.0)
    out = ds.expression.unsqueeze(0).repeat(len(kbps), 1, 1)  # (K,F,D)
    for k, rate in enumerate(kbps):
        decoded, _ = coded_features(tables, code, pose, rate, fps)
        out[k, :n] = torch.from_numpy(decoded)
    return out


def mix_coded(inputs: torch.Tensor, coded: torch.Tensor, frames: torch.Tensor, share: float) -> torch.Tensor:
    """Per-ray inputs (R,D): a random ``share`` of the rays take their frame's (R,) coded inputs (K,F,D) at a
    random one of the K rates instead."""
    n = inputs.shape[0]
    pick = torch.rand(n, device=inputs.device) < share  # (R,)
    rate = torch.randint(0, coded.shape[0], (n,), device=frames.device)
    return torch.where(pick[:, None], coded[rate, frames].to(inputs.device), inputs)


def noise_at(cfg: TrainConfig, progress: float) -> float:
    """The expression noise at ``progress`` (0…1) of the schedule."""
    return cfg.expression_noise * (1.0 - progress if cfg.expression_noise_decay else 1.0)


def noisy_expression(model: PortraitNeRF, inputs: torch.Tensor, noise: float) -> torch.Tensor:
    """Per-ray inputs (R,E+T) with N(0, noise²) added to the normalised expression part (the torso shift
    unchanged); ``inputs`` itself when ``noise`` is 0."""
    if noise <= 0:
        return inputs
    e = model.cfg.expression_dim
    jitter = torch.randn_like(inputs[:, :e]) * (noise * model.expr_std)  # (R,E) raw units
    return torch.cat([inputs[:, :e] + jitter, inputs[:, e:]], 1)


def settings_trial(
    model: PortraitNeRF, cfg: TrainConfig
) -> tuple[LoopTrial, dict[str, tuple[torch.dtype, str]]]:
    """The trial that picks the training step's (head MLP precision, density kernel) by timing this run's own
    steps (:class:`nerfvc.machine.LoopTrial`, from step ``cfg.settings_trial_at``; fp32 with torch kernels
    until then), and the candidates by name. ``NERFVC_PRECISION`` / ``NERFVC_KERNEL`` narrow the candidates;
    ``NERFVC_TRAIN_SETTINGS=fp32-torch|fp32-fused|bf16-torch`` picks one. Remembered per machine, thread
    count, batch size and architecture (:func:`architecture_digest`). Why in the loop: on a Xeon with AMX
    bf16 won the first steps (155 vs 163 ms at 1 thread) and lost once the occupancy grid had pruned
    (272 vs 186 ms per step), and a tiny test model's choice must not decide a real model's."""
    device = model.head_lo.device
    forced_p = os.environ.get("NERFVC_PRECISION", "auto").strip().lower()
    forced_k = os.environ.get("NERFVC_KERNEL", "auto").strip().lower()
    kernels = ["torch"] + (["fused"] if device.type == "cpu" and fused_density_available() else [])
    candidates = {
        f"{p}-{k}": (PRECISIONS[p], k)
        for p in PRECISIONS
        for k in kernels
        if forced_p in ("auto", "", p) and forced_k in ("auto", "", k) and not (p == "bf16" and k == "fused")
    }
    if not candidates:  # a forced value that fits nothing: let the field's own checks say why
        candidates = {"forced": (mlp_dtype(device), density_kernel(device, backward=True))}
    what = (
        f"training step ({', '.join(candidates)}) of {cfg.batch_rays} rays, {architecture_digest(model.cfg)}"
    )
    provisional = "fp32-torch" if "fp32-torch" in candidates else next(iter(candidates))
    trial = LoopTrial(what, device, "NERFVC_TRAIN_SETTINGS", candidates, provisional, cfg.settings_trial_at)
    return trial, candidates


def architecture_digest(mcfg: ModelConfig) -> str:
    """A short digest of the model's architecture (everything in ``mcfg`` but the per-dataset head box): a
    training-step timing holds only for the shapes it was measured on — a tiny test model once cached
    bf16 for real models, whose steps it made ~30% slower on a Xeon with AMX."""
    arch = {k: v for k, v in asdict(mcfg).items() if k not in ("head_lo", "head_hi")}
    return "model " + hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
