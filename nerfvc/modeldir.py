"""The model directory that the sender and the receiver share, and its fingerprint.

A MODEL directory holds everything both ends need (see docs/architecture.md). ``model.json`` lists every
file with its SHA-256; the fingerprint is the first 16 hex digits of the SHA-256 over those (name, hash)
pairs, so any change to weights, face model or codec tables changes it. Bitstreams carry the fingerprint.
"""

from __future__ import annotations

import hashlib
import re
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


def _check_manifest(path: Path, manifest: Any) -> None:
    """Raise :class:`InputError` unless ``manifest`` has the shape :func:`finalize_model_dir` writes, with
    every file a plain name inside the model directory."""
    bad = f"{path}: {MANIFEST} is malformed"
    if not isinstance(manifest, dict):
        raise InputError(f"{bad} (not a JSON object)")
    if manifest.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: {MANIFEST} is not a nerfvc model manifest")
    if manifest.get("version") != MODEL_VERSION:
        raise ModelMismatchError(f"{path}: model version {manifest.get('version')!r} is not supported")
    fp, files = manifest.get("fingerprint"), manifest.get("files")
    if not isinstance(fp, str) or not _HEX16.fullmatch(fp):
        raise InputError(f"{bad} (fingerprint must be 16 hex digits)")
    if not isinstance(files, dict):
        raise InputError(f"{bad} ('files' must map file names to SHA-256 digests)")
    for name, digest in files.items():
        if not _plain_name(name):
            raise InputError(
                f"{bad} (file name {name[:80]!r} is not a plain file name in the model directory)"
            )
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise InputError(f"{bad} (the digest of {name} is not a SHA-256)")


_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _plain_name(name: str) -> bool:
    """A name :func:`finalize_model_dir` can list: a file directly in the directory (no separator, not
    hidden, not ``.``/``..``, not the manifest)."""
    return (
        0 < len(name) <= 255
        and name.isprintable()
        and not set(name) & {"/", "\\"}
        and name[0] != "."
        and name != MANIFEST
    )


def read_model_manifest(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read and check ``model.json``; with ``verify`` check that every listed file exists (a regular file in
    the directory) with its recorded hash. A malformed manifest is an :class:`InputError`."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: model directory not found")
    if not (path / MANIFEST).exists():
        raise InputError(f"{path}: not a nerfvc model (no {MANIFEST}; was training finished?)")
    manifest = read_json(path / MANIFEST)
    _check_manifest(path, manifest)
    if verify:
        for name, digest in manifest["files"].items():
            f = path / name
            if not f.exists():
                raise ModelMismatchError(f"{path}: model file {name} is missing")
            if not f.is_file():
                raise ModelMismatchError(f"{path}: model file {name} is not a regular file")
            if sha256_file(f) != digest:
                raise ModelMismatchError(f"{path}: model file {name} was modified or is corrupt")
        if fingerprint_of(manifest["files"]) != manifest["fingerprint"]:
            raise ModelMismatchError(f"{path}: fingerprint does not match the model's files")
    return manifest


def model_torso_dims(path: str | Path) -> int:
    """How many torso-shift values follow the expression in the MODEL's per-frame input (0, 2, or 4 with
    the band's halves: ``nerfvc.face.torso``)."""
    nerf = Path(path) / "nerf.json"
    if not nerf.exists():
        return 0
    config = read_json(nerf)
    config = config.get("model") if isinstance(config, dict) else None
    dims = config.get("torso_dims", 0) if isinstance(config, dict) else None
    if dims not in (0, 2, 4) or isinstance(dims, bool):
        raise InputError(f"{nerf}: malformed (no 'model' object with torso_dims 0, 2 or 4)")
    return int(dims)
