"""The DATASET directory that ``nerfvc prepare`` writes and training, the embedding and the tools read.

A DATASET directory (see docs/architecture.md) holds ``manifest.json`` (camera, crop, fps, split,
``complete``), ``frames/%06d.png`` (RGB), ``masks/%06d.png`` (0 background, 1 torso, 2 head),
``features.npz`` (per-frame expression, pose, landmarks, validity, timestamps, torso shift),
``background.png``, the face model (``face_model.safetensors`` + ``.json``), the torso tracker and the
enrollment coverage (``coverage.json``). This
module owns those names, the manifest check and the one train/test split rule (:func:`split_point`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nerfvc.errors import InputError
from nerfvc.features import load_features, model_input
from nerfvc.fsutil import read_json, sha256_file

DATASET_FORMAT = "nerfvc-dataset"
DATASET_VERSION = 1
MANIFEST = "manifest.json"
FEATURES_FILE = "features.npz"
BACKGROUND_FILE = "background.png"
FACE_MODEL_FILE = "face_model.safetensors"  # also in a MODEL directory, copied from the dataset
FACE_MODEL_JSON = "face_model.json"
FRAMES_DIR = "frames"
MASKS_DIR = "masks"
COVERAGE_FILE = "coverage.json"  # enrollment coverage (nerfvc.face.coverage), written by prepare
TRAIN_FRACTION = 0.8  # the first 80% of a clip's frames train, the last 20% test


def split_point(num_frames: int) -> int:
    """How many of a clip's first frames are training frames: ``round(0.8 n)``, at least 1.

    Frames ``[0, split_point(n))`` train, ``[split_point(n), n)`` are the test split. ``nerfvc prepare``
    writes this split into the manifest and ``nerfvc eval`` scores exactly the test frames of it, so an
    evaluation never scores a frame the model was trained on.
    """
    return max(1, round(TRAIN_FRACTION * num_frames))


def split_ranges(num_frames: int) -> dict[str, list[int]]:
    """The manifest's ``split`` for ``num_frames`` frames: ``{"train": [0, k], "test": [k, n]}``."""
    k = split_point(num_frames)
    return {"train": [0, k], "test": [k, num_frames]}


def frame_path(root: str | Path, index: int) -> Path:
    """``frames/%06d.png`` of frame ``index``."""
    return Path(root) / FRAMES_DIR / f"{index:06d}.png"


def mask_path(root: str | Path, index: int) -> Path:
    """``masks/%06d.png`` of frame ``index``."""
    return Path(root) / MASKS_DIR / f"{index:06d}.png"


def features_path(root: str | Path) -> Path:
    """The dataset's ``features.npz``."""
    return Path(root) / FEATURES_FILE


def read_manifest(root: str | Path, complete: bool = True) -> dict[str, Any]:
    """Read and check ``manifest.json``: a nerfvc dataset and, with ``complete``, a finished one.

    :class:`InputError` when the directory, the manifest or the format is wrong or it is incomplete.
    """
    d = Path(root)
    if not d.is_dir():
        raise InputError(f"{d}: dataset directory not found")
    manifest = read_json(d / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise InputError(f"{d}: {MANIFEST} is not a nerfvc dataset")
    if complete and not manifest.get("complete"):
        raise InputError(f"{d}: dataset is incomplete (rerun nerfvc prepare to finish it)")
    return manifest


def dataset_split(manifest: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((train start, end), (test start, end))`` frame ranges recorded in a manifest."""
    split = manifest.get("split")
    if split is None:
        split = split_ranges(int(manifest["num_frames"]))
    try:
        (a, b), (c, d) = split["train"], split["test"]
        return (int(a), int(b)), (int(c), int(d))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{MANIFEST}: malformed split {split!r}") from e


def read_features(root: str | Path, manifest: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The dataset's ``features.npz`` arrays; with ``manifest``, checked to hold its ``num_frames``."""
    path = features_path(root)
    feats = load_features(path)
    if manifest is not None and len(feats["pose"]) != int(manifest["num_frames"]):
        raise InputError(
            f"{Path(root)}: {FEATURES_FILE} has {len(feats['pose'])} frames, "
            f"manifest says {manifest['num_frames']}"
        )
    return feats


@dataclass(frozen=True)
class TrainingSplit:
    """A dataset's training frames as a MODEL reads them: ``inputs`` (n,E+T) float32 (expression, then the
    torso shift when the model takes one), ``pose`` (n,12), ``valid`` (n,) bool (None when the features do
    not say), ``frames`` (n,) their indices, ``expression_dim`` E and the clip's ``fps``."""

    inputs: np.ndarray
    pose: np.ndarray
    valid: np.ndarray | None
    frames: np.ndarray
    expression_dim: int
    fps: float


def training_split(root: str | Path, torso_dims: int) -> TrainingSplit:
    """The training split of the DATASET at ``root`` for a model with ``torso_dims`` torso inputs (what the
    codec tables, the quality guard and the reference frames are fitted on)."""
    manifest = read_manifest(root)
    feats = read_features(root, manifest)
    (a, b), _ = dataset_split(manifest)
    if torso_dims and "torso" not in feats:
        raise InputError(f"{root}: the model takes a torso shift, but the dataset's features have none")
    torso = feats["torso"][a:b] if torso_dims else None
    return TrainingSplit(
        inputs=model_input(feats["expression"][a:b], torso, torso_dims),
        pose=feats["pose"][a:b].astype(np.float32),
        valid=feats["valid"][a:b].astype(bool) if "valid" in feats else None,
        frames=np.arange(a, b),
        expression_dim=int(feats["expression"].shape[1]),
        fps=float(manifest.get("fps") or 25.0),
    )


def features_fingerprint(root: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of ``features.npz`` (identifies the dataset in checkpoints)."""
    return sha256_file(features_path(root))[:16]
