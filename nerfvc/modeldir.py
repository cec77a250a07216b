"""The model directory that the sender and the receiver share, and its fingerprint.

A MODEL directory holds everything both ends need (see docs/architecture.md). ``model.json`` lists every
file with its SHA-256; the fingerprint is the first 16 hex digits of the SHA-256 over those (name, hash)
pairs, so any change to weights, face model or codec tables changes it. Bitstreams carry the fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.fsutil import read_json, sha256_file, write_json_atomic

MODEL_FORMAT = "nerfvc-model"
MODEL_VERSION = 1
MANIFEST = "model.json"


def fingerprint_of(files: dict[str, str]) -> str:
    """Fingerprint (16 hex digits) of a ``{file name: sha256}`` mapping."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()[:16]


def finalize_model_dir(path: str | Path, extra: dict[str, Any] | None = None) -> str:
    """Hash the files in ``path`` (but model.json), write ``model.json`` atomically, return the fingerprint.

    Call this last, after every other file of the model has been written.
    """
    path = Path(path)
    files = {
        p.name: sha256_file(p)
        for p in sorted(path.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    fp = fingerprint_of(files)
    manifest = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "fingerprint": fp, "files": files}
    manifest.update(extra or {})
    write_json_atomic(path / MANIFEST, manifest)
    return fp


def read_model_manifest(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read ``model.json``; with ``verify`` check that every listed file exists with its recorded hash."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: model directory not found")
    if not (path / MANIFEST).exists():
        raise InputError(f"{path}: not a nerfvc model (no {MANIFEST}; was training finished?)")
    manifest = read_json(path / MANIFEST)
    if manifest.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: {MANIFEST} is not a nerfvc model manifest")
    if manifest.get("version") != MODEL_VERSION:
        raise ModelMismatchError(f"{path}: model version {manifest.get('version')} is not supported")
    if verify:
        for name, digest in manifest["files"].items():
            f = path / name
            if not f.exists():
                raise ModelMismatchError(f"{path}: model file {name} is missing")
            if sha256_file(f) != digest:
                raise ModelMismatchError(f"{path}: model file {name} was modified or is corrupt")
        if fingerprint_of(manifest["files"]) != manifest["fingerprint"]:
            raise ModelMismatchError(f"{path}: fingerprint does not match the model's files")
    return manifest


def model_torso_dims(path: str | Path) -> int:
    """How many torso-shift values follow the expression in the MODEL's per-frame input (0 or 2)."""
    nerf = Path(path) / "nerf.json"
    return int(read_json(nerf)["model"].get("torso_dims", 0)) if nerf.exists() else 0
