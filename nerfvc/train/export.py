"""Writing the MODEL directory (docs/architecture.md) from a trained model, in one place."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.torch import save_file

from nerfvc.camera import Camera
from nerfvc.codec import CODEC_FILE, CodecTables, fit_codec
from nerfvc.datasetdir import (
    BACKGROUND_FILE,
    FACE_MODEL_FILE,
    FACE_MODEL_JSON,
    read_manifest,
    training_split,
)
from nerfvc.face.model import load_face_model
from nerfvc.face.torso import TORSO_FILE, TORSO_REFERENCE
from nerfvc.fsutil import atomic_path, write_bytes_atomic, write_json_atomic
from nerfvc.modeldir import finalize_model_dir
from nerfvc.render.model import PortraitNeRF
from nerfvc.render.references import REFERENCE_COUNT, REFERENCES_FILE, ReferenceFrames
from nerfvc.render.renderer import NERF_FORMAT, NERF_VERSION


def write_model_dir(
    path: str | Path,
    model: PortraitNeRF,
    dataset_root: str | Path,
    info: dict[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    references: int = REFERENCE_COUNT,
) -> str:
    """Write nerf.safetensors/json, camera.json, background.png, face_model.*, ``extra_files``, the feature
    codec's tables (``codec.json``, fitted on the training frames) and ``references`` real training frames
    (``references.safetensors``; 0: none) into ``path``, then finalize ``model.json``; returns the
    fingerprint.

    Camera and background are the dataset's own (full size): the renderer scales them to any output size.
    """
    path, root = Path(path), Path(dataset_root)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path / "nerf.safetensors") as tmp:
        save_file(sd, str(tmp))
    meta = {"format": NERF_FORMAT, "version": NERF_VERSION, "model": model.cfg.to_dict(), **(info or {})}
    write_json_atomic(path / "nerf.json", meta)
    manifest = read_manifest(root)
    camera = Camera.from_dict(manifest["camera"])
    crop = {"crop": manifest["crop"]} if manifest.get("crop") else {}  # how the sender crops source video
    write_json_atomic(path / "camera.json", {**camera.to_dict(), **crop})
    bg = np.asarray(Image.open(root / BACKGROUND_FILE).convert("RGB"))
    with atomic_path(path / BACKGROUND_FILE) as tmp:
        Image.fromarray(bg).save(tmp, format="PNG")
    for name in (FACE_MODEL_FILE, FACE_MODEL_JSON):
        with atomic_path(path / name) as tmp:
            shutil.copyfile(root / name, tmp)
    for name in (TORSO_FILE, TORSO_REFERENCE) if model.cfg.torso_dims else ():  # sender's torso tracker
        if (root / name).exists():
            with atomic_path(path / name) as tmp:
                shutil.copyfile(root / name, tmp)
    for name, data in (extra_files or {}).items():
        write_bytes_atomic(path / name, data)
    write_dataset_codec_tables(path, root, model.cfg.torso_dims)
    if references > 0:
        ReferenceFrames.from_dataset(root, model, references).save(path)
    else:
        (path / REFERENCES_FILE).unlink(missing_ok=True)  # a rerun with 0 leaves none from before
    from nerfvc.guard.modelfiles import write_guard_stats

    write_guard_stats(path, root, model.cfg.torso_dims)  # the sender's quality guard (docs/guard.md)
    return finalize_model_dir(path)


def dataset_codec_tables(root: Path, torso_dims: int = 0) -> CodecTables:
    """The feature codec fitted on the dataset's training frames (expression, then the torso shift if
    ``torso_dims``), as the MODEL directory's ``codec.json`` holds it."""
    split = training_split(root, torso_dims)
    return fit_codec(split.inputs, split.pose, valid=split.valid, face_model=load_face_model(root))


def write_dataset_codec_tables(path: Path, root: Path, torso_dims: int = 0) -> None:
    """Fit the feature codec on the dataset's training frames and write ``codec.json`` into ``path``."""
    dataset_codec_tables(root, torso_dims).save(path / CODEC_FILE)
