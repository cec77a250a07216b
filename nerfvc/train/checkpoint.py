"""Resumable training checkpoints: ``checkpoint.safetensors`` (model + Adam state) and ``checkpoint.json``.

Both are written atomically; the JSON records the SHA-256 of the tensors file, the model config and the
dataset fingerprint, so a corrupt, truncated or mismatched checkpoint is refused with a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nerfvc.errors import ModelMismatchError
from nerfvc.fsutil import atomic_path, read_json, sha256_file, write_json_atomic
from nerfvc.render.model import ModelConfig, PortraitNeRF

CKPT_FORMAT = "nerfvc-checkpoint"
CKPT_VERSION = 1


def save_checkpoint(
    directory: str | Path,
    model: PortraitNeRF,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    frame_codes: torch.Tensor | None = None,
) -> None:
    """Write model weights, optimizer moments, the training-only ``frame_codes`` (F,K) if any and ``state``
    (step, elapsed, dataset, ...) to ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    if frame_codes is not None:
        tensors["frame_codes"] = frame_codes.detach().contiguous()
    for i, p in enumerate(optimizer.param_groups[0]["params"]):
        for k, v in optimizer.state.get(p, {}).items():
            tensors[f"optim/{i}/{k}"] = v.detach().reshape(v.shape).contiguous()
    with atomic_path(d / "checkpoint.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "format": CKPT_FORMAT,
        "version": CKPT_VERSION,
        "sha256": sha256_file(d / "checkpoint.safetensors"),
        "model": model.cfg.to_dict(),
        **state,
    }
    write_json_atomic(d / "checkpoint.json", meta)


def load_checkpoint(
    directory: str | Path,
    model: PortraitNeRF,
    optimizer: torch.optim.Optimizer | None = None,
    dataset_fingerprint: str | None = None,
    frame_codes: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizer``, and ``frame_codes`` (F,K) when training with them) in place from
    ``directory``; returns the saved state dict.

    Raises :class:`ModelMismatchError` if the checkpoint is corrupt or was made for another model or dataset.
    """
    d = Path(directory)
    meta = read_json(d / "checkpoint.json")
    if meta.get("format") != CKPT_FORMAT or meta.get("version") != CKPT_VERSION:
        raise ModelMismatchError(
            f"{d}: not a nerfvc checkpoint of version {CKPT_VERSION}; remove {d} to start over"
        )
    if (
        not (d / "checkpoint.safetensors").exists()
        or sha256_file(d / "checkpoint.safetensors") != meta["sha256"]
    ):
        raise ModelMismatchError(
            f"{d / 'checkpoint.safetensors'}: missing or corrupt (hash mismatch); remove {d} to start over"
        )
    if ModelConfig.from_dict(meta["model"]) != model.cfg:
        raise ModelMismatchError(f"{d}: checkpoint was made with another model config; use a new output dir")
    if dataset_fingerprint is not None and meta.get("dataset") != dataset_fingerprint:
        raise ModelMismatchError(f"{d}: checkpoint was trained on another dataset; use a new output dir")
    try:
        tensors = load_file(str(d / "checkpoint.safetensors"))
    except Exception as e:
        raise ModelMismatchError(
            f"{d / 'checkpoint.safetensors'}: unreadable ({e}); remove {d} to start over"
        ) from e
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelMismatchError(f"{d}: checkpoint does not fit the model ({first}); remove {d}") from e
    saved_codes = tensors.get("frame_codes")
    shapes = [None if t is None else tuple(t.shape) for t in (saved_codes, frame_codes)]
    if shapes[0] != shapes[1]:  # one side has none, or both have them for another number of frames
        raise ModelMismatchError(f"{d}: checkpoint was made with other frame codes; use a new output dir")
    if frame_codes is not None:
        with torch.no_grad():
            frame_codes.copy_(tensors["frame_codes"])
    if optimizer is not None:
        params = optimizer.param_groups[0]["params"]
        for i, p in enumerate(params):
            st = {k.split("/")[2]: v for k, v in tensors.items() if k.startswith(f"optim/{i}/")}
            if st:
                optimizer.state[p] = st
    return meta
