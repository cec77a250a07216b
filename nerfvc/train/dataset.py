"""Reading a DATASET directory (docs/architecture.md) into tensors for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerfvc.camera import Camera
from nerfvc.datasetdir import (
    BACKGROUND_FILE,
    FACE_MODEL_JSON,
    dataset_split,
    features_fingerprint,
    frame_path,
    mask_path,
    read_features,
    read_manifest,
)
from nerfvc.errors import InputError
from nerfvc.features import model_input
from nerfvc.fsutil import read_json
from nerfvc.render.rays import pixel_dirs


def parse_size(size: str | int | None, width: int, height: int) -> tuple[int, int]:
    """``None`` → (width, height); ``S`` → longer side S, aspect kept; ``"WxH"`` → exact."""
    if size is None:
        return width, height
    s = str(size).lower()
    try:
        if "x" in s:
            w, h = (int(v) for v in s.split("x"))
        else:
            longer = int(s)
            k = longer / max(width, height)
            w, h = (longer, round(height * k)) if width >= height else (round(width * k), longer)
    except ValueError as e:
        raise InputError(f"bad size {size!r}: use S (longer side) or WxH") from e
    if w < 8 or h < 8 or w > 8192 or h > 8192:
        raise InputError(f"size {w}x{h} out of range (8..8192)")
    return w, h


def load_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as uint8 RGB (H,W,3), area-resized to ``size`` = (W,H) if given."""
    try:
        im = Image.open(path).convert("RGB")
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.BOX if size[0] < im.size[0] else Image.Resampling.BICUBIC)
    return np.asarray(im)


def head_bounds(root: Path) -> tuple[list[float], list[float]]:
    """The canonical head box [lo, hi] from ``face_model.json`` ``head_bounds`` (2,3)."""
    meta = read_json(root / FACE_MODEL_JSON)
    b = np.asarray(meta.get("head_bounds", []), dtype=np.float64)
    if b.shape != (2, 3) or not np.all(b[1] > b[0]):
        raise InputError(f"{root / FACE_MODEL_JSON}: head_bounds must be [[min x,y,z],[max x,y,z]], got {b}")
    return b[0].tolist(), b[1].tolist()


@dataclass
class PortraitDataset:
    """A loaded dataset at one size: frames, masks, features, background, camera and split."""

    root: Path
    camera: Camera  # at the loaded size
    frames: torch.Tensor  # (N,H,W,3) uint8
    masks: torch.Tensor  # (N,H,W) uint8: 0 background, 1 torso, 2 head
    background: torch.Tensor  # (H,W,3) uint8
    expression: torch.Tensor  # (N,E+T) float32: the model's inputs (expression, then the torso shift if T)
    pose: torch.Tensor  # (N,12) float32
    train_idx: np.ndarray  # (n,) frame indices
    test_idx: np.ndarray  # (N-n,)
    head_lo: list[float]
    head_hi: list[float]
    fingerprint: (
        str  # of features.npz (identifies the dataset in checkpoints; datasetdir.features_fingerprint)
    )
    torso_dims: int = 0  # T: 2 when the dataset has torso shifts and they were asked for
    # (N,4) y0,y1,x0,x1 of each frame's face-mesh landmarks at the loaded size (None: features without them)
    face_boxes: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def load_dataset(
    path: str | Path, size: str | int | None = None, frames: bool = True, torso: bool = True
) -> PortraitDataset:
    """Load a complete DATASET directory, resized to ``size`` (see :func:`parse_size`); with ``torso`` the
    expression is followed by the torso shift when the dataset has one (``nerfvc.face.torso``)."""
    root = Path(path)
    manifest = read_manifest(root)
    cam_full = Camera.from_dict(manifest["camera"])
    w, h = parse_size(size, cam_full.width, cam_full.height)
    camera = cam_full.scaled(w, h)
    feats = read_features(root, manifest)
    n = int(manifest["num_frames"])
    train, test = dataset_split(manifest)
    train_idx = np.arange(*train)
    test_idx = np.arange(*test)
    if len(train_idx) == 0:
        raise InputError(f"{root}: empty training split")
    if frames:
        imgs = np.stack([load_rgb(frame_path(root, i), (w, h)) for i in range(n)])
        masks = np.stack([_load_mask(mask_path(root, i), (w, h)) for i in range(n)])
    else:
        imgs = np.zeros((n, h, w, 3), np.uint8)
        masks = np.zeros((n, h, w), np.uint8)
    lo, hi = head_bounds(root)
    torso_dims = feats["torso"].shape[1] if torso and "torso" in feats else 0
    inputs = model_input(feats["expression"], feats.get("torso"), torso_dims)
    face_boxes = None
    if "landmarks" in feats:
        uv = feats["landmarks"][..., :2] * np.array([w / cam_full.width, h / cam_full.height])  # (N,478,2)
        face_boxes = torch.from_numpy(
            np.stack([uv[..., 1].min(1), uv[..., 1].max(1), uv[..., 0].min(1), uv[..., 0].max(1)], 1)
        ).float()
    return PortraitDataset(
        root=root,
        camera=camera,
        frames=torch.from_numpy(imgs),
        masks=torch.from_numpy(masks),
        background=torch.from_numpy(load_rgb(root / BACKGROUND_FILE, (w, h)).copy()),
        expression=torch.from_numpy(inputs),
        pose=torch.from_numpy(feats["pose"].astype(np.float32)),
        train_idx=train_idx,
        test_idx=test_idx,
        head_lo=lo,
        head_hi=hi,
        fingerprint=features_fingerprint(root),
        torso_dims=torso_dims,
        face_boxes=face_boxes,
    )


def ray_batch(
    ds: PortraitDataset, f: torch.Tensor, y: torch.Tensor, x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The rays through pixels ``(y, x)`` of frames ``f`` (all (R,) int64): directions, uv, target colour,
    mask label, background colour, the frames' inputs and poses, and ``frame``: ``f`` itself."""
    dirs, uv = pixel_dirs(ds.camera, x.float() + 0.5, y.float() + 0.5)
    return {
        "dirs": dirs,
        "uv": uv,
        "rgb": ds.frames[f, y, x].float() / 255,
        "label": ds.masks[f, y, x],
        "background": ds.background[y, x].float() / 255,
        "expression": ds.expression[f],
        "pose": ds.pose[f],
        "frame": f,
    }


def _load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        im: Image.Image = Image.open(path)
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    if im.mode not in ("L", "P", "I;16"):
        im = im.convert("L")
    if im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)
    return np.asarray(im).astype(np.uint8)
