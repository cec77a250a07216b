"""Guard statistics in a MODEL directory: fitted from the DATASET's training frames by training (through
:func:`write_guard_stats`) or added to an existing model by ``nerfvc guard-fit MODEL DATASET``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerfvc.datasetdir import training_split
from nerfvc.errors import InputError
from nerfvc.guard.stats import GuardStats
from nerfvc.modeldir import MANIFEST, finalize_model_dir, read_model_manifest


def fit_from_dataset(
    model_dir: str | Path,
    dataset_root: str | Path,
    torso_dims: int | None = None,
    threshold: float | None = None,
) -> GuardStats:
    """Fit the guard on the dataset's training split (the model inputs the MODEL takes)."""
    from nerfvc.face.model import load_face_model
    from nerfvc.modeldir import model_torso_dims

    split = training_split(dataset_root, model_torso_dims(model_dir) if torso_dims is None else torso_dims)
    face = load_face_model(model_dir) or load_face_model(dataset_root)
    kw: dict[str, Any] = {} if threshold is None else {"threshold": threshold}
    return GuardStats.fit(
        split.inputs,
        split.pose,
        expression_dim=split.expression_dim,
        fps=split.fps,
        valid=split.valid,
        face_basis=None if face is None else face[1],
        **kw,
    )


def write_guard_stats(model_dir: str | Path, dataset_root: str | Path, torso_dims: int | None = None) -> None:
    """Fit and write ``guard.safetensors`` / ``guard.json`` into ``model_dir`` (before finalizing it)."""
    fit_from_dataset(model_dir, dataset_root, torso_dims).save(model_dir)


def add_guard_to_model(
    model_dir: str | Path, dataset_root: str | Path, threshold: float | None = None
) -> str:
    """Fit the guard for an existing (finalized) MODEL from its DATASET, write it and refresh the manifest;
    returns the new fingerprint (the model's files changed, so streams coded before no longer match)."""
    model_dir = Path(model_dir)
    old = read_model_manifest(model_dir)  # a finished, intact model
    stats = fit_from_dataset(model_dir, dataset_root, threshold=threshold)
    stats.save(model_dir)
    extra = {k: v for k, v in old.items() if k not in ("format", "version", "fingerprint", "files")}
    if not (model_dir / MANIFEST).exists():  # pragma: no cover - read_model_manifest checked it
        raise InputError(f"{model_dir}: not a nerfvc model")
    return finalize_model_dir(model_dir, extra)
