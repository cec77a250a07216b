"""Composed fields: the expression-conditioned head radiance field and the pose-conditioned 2D torso field.

- :class:`HeadField` lives in canonical head space (the renderer moves samples by the inverse head pose).
  Position → hash grid; density and a geometry feature from (grid features, expression blend shapes,
  expression code); colour from (geometry feature, view direction, expression code, consistency code).
  The blend shapes (``blend_res``) give the expression an effect that depends on position, as in
  NeRFBlendShape (Gao et al. 2022): dense grids B_k, one per code channel c_k, read as Σ_k c_k·B_k(x).
- :class:`TorsoField` is ER-NeRF-style 2D: a pose-conditioned deformation of image coordinates, then 2D
  feature planes and an MLP → RGB and alpha, composited behind the head.
Both take the shared head-torso consistency code (a learnable vector; dimension 0 switches it off).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nerfvc.field.blend import blend_lookup
from nerfvc.field.encodings import HashGrid, HashGridConfig, PlaneGrid, PlaneGridConfig
from nerfvc.field.fused import FusedDensityFn, fused_density_available
from nerfvc.machine import PRECISIONS, best_seconds, choose


def mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``."""
    mods: list[nn.Module] = []
    d = n_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods)


def linears(net: nn.Sequential) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of an :func:`mlp`, in order (typed: ``net[i]`` is only a ``Module``)."""
    return [m for m in net if isinstance(m, nn.Linear)]


def split_linear(layer: nn.Linear, parts: list[torch.Tensor]) -> torch.Tensor:
    """``layer`` applied to the concatenation of ``parts`` without building it. ``parts[0]`` is (N,d); the
    others are (N,d) or (1,d) (shared by all rows, e.g. one expression code for a whole frame). Shared parts
    are folded into the bias once, so they cost nothing per row."""
    x = parts[0]
    d0 = x.shape[-1]
    bias = layer.bias.view(1, -1)  # (1,H)
    rows = []  # per-row parts with their weight columns
    i = d0
    for p in parts[1:]:
        d = p.shape[-1]
        if d:
            w = layer.weight[:, i : i + d]
            if p.shape[0] == 1 and x.shape[0] != 1:
                bias = torch.addmm(bias, p, w.t())
            else:
                rows.append((p, w))
            i += d
    out = torch.addmm(bias, x, layer.weight[:, :d0].t())  # (N,H)
    for p, w in rows:
        out = torch.addmm(out, p, w.t())
    return out


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with its input clamped (stable density activation)."""
    return torch.exp(x.clamp(max=15.0))


@dataclass
class HeadFieldConfig:
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    expression_dim: int = 79  # input expression coefficients
    code_dim: int = 16  # learned projection of the (normalised) expression
    geo_dim: int = 15
    hidden: int = 64
    sigma_layers: int = 1
    color_layers: int = 1
    use_view_dir: bool = True
    # the expression code enters the colour MLP (False: colour sees it only through the geometry feature)
    color_code: bool = True
    # the expression code enters the density MLP (False: density follows the expression only through the
    # blend shapes, which act locally; the code can no longer move the whole head's outline per frame)
    density_code: bool = True
    # expression blend shapes: one dense grid of grid.features channels per code channel at this resolution,
    # weighted by the code (0: none; (blend_res+1)³ must fit one level of the hash table)
    blend_res: int = 0


def blend_table_log2(blend_res: int) -> int:
    """The smallest log2 hash-table size one level of which holds blend shapes of resolution ``blend_res``
    ((blend_res+1)³ vertices)."""
    return ((blend_res + 1) ** 3 - 1).bit_length()


def coarse_head_config() -> HeadFieldConfig:
    """The default coarse head of a portrait model (density only, small)."""
    return HeadFieldConfig(
        grid=HashGridConfig(levels=8, features=2, log2_table=13, base_res=8, max_res=96),
        code_dim=8,
        geo_dim=7,
        hidden=32,
        use_view_dir=False,
    )


def fine_head_config() -> HeadFieldConfig:
    """The default fine head of a portrait model."""
    # expression blend shapes on (R = 31, 32³ vertices): in the 10-minute A/B with the denormal flush on the
    # 8 shared clips (benchmarks/results/ab_10min_blend-res-31_ftz_8clips_256.md) better on PSNR on 12 of 16
    # points, LPIPS on 14, DISTS on 15, CSIM on 12; german loses 0.6 dB (LPIPS, CSIM level).
    # no expression code in the density MLP (the blend shapes carry the expression into the geometry): A and B
    # trained side by side on the 8 clips (benchmarks/results/ab_10min_no-density-code_8clips_256.md) better
    # on PSNR on 12 of 16 points, SSIM 13, LPIPS 12, CSIM 11, DISTS 9; PRMSE 8, AUCON 7
    # 2^16 hash entries per level and 32 hidden units (capacity moved from the MLP into the table): the
    # 8 clips side by side (benchmarks/results/pair_5min_fine-table-16_fine-hidden-32_256.md) 64 of 112
    # metric values better, PSNR +0.11 dB, DISTS better on 13 of 16 points, CSIM 11; 256² and 512² frames
    # 12-13% cheaper on AVX2, ~10% more training steps per minute; d6 loses 0.25-0.6 dB (docs/nerf.md)
    return HeadFieldConfig(grid=HashGridConfig(log2_table=16), hidden=32, blend_res=31, density_code=False)


@torch.inference_mode(False)
@torch.enable_grad()
def _time_head(dtype: torch.dtype, device: torch.device, rows: int = 16384, repeat: int = 5) -> float:
    """Best seconds of a fine head field's forward + backward (density by the torch kernel, then colour) on
    ``rows`` points with per-row codes, its MLPs under autocast to ``dtype`` — a training step's field work,
    casts included."""
    g = torch.Generator().manual_seed(0)
    head = HeadField(fine_head_config(), consistency_dim=8).to(device)  # the real fine head's shapes
    x = torch.rand(rows, 3, generator=g).to(device)
    code = torch.randn(rows, head.cfg.code_dim, generator=g).to(device)
    view = F.normalize(torch.randn(rows, 3, generator=g), dim=-1).to(device)
    cons = torch.zeros(1, 8, device=device)

    def step() -> None:
        sigma, geo = head._density_by("torch", x, code, dtype)
        rgb = head._color(geo, code, view, cons, dtype)
        (sigma.mean() + rgb.square().mean()).backward()

    return best_seconds(step, repeat)


def mlp_dtype(
    device: torch.device | str = "cpu",
    timer: Callable[[torch.dtype, torch.device], float] = _time_head,
) -> torch.dtype:
    """The dtype the head MLPs run in on ``device``: ``NERFVC_PRECISION`` if set to fp32/bf16, else whichever
    ``timer`` measured faster here (cached per CPU model, kernel ISA and torch version)."""
    if _SETTINGS:
        return _SETTINGS[-1][0]
    device = torch.device(device)
    options = {name: (lambda d=dtype: timer(d, device)) for name, dtype in PRECISIONS.items()}
    return PRECISIONS[choose("head MLP precision", device, "NERFVC_PRECISION", options)]


_SETTINGS: list[tuple[torch.dtype, str]] = []  # (precision, density kernel) of enclosing field_settings


@contextmanager
def field_settings(dtype: torch.dtype, kernel: str) -> Iterator[None]:
    """Inside the block every head field runs its MLPs in ``dtype`` and its density by ``kernel``, whatever
    :func:`mlp_dtype` and :func:`density_kernel` would choose (the trainer measures whole training steps and
    runs its loop in the winner)."""
    _SETTINGS.append((dtype, kernel))
    try:
        yield
    finally:
        _SETTINGS.pop()


def forced_kernel() -> str | None:
    """The kernel an enclosing :func:`field_settings` forces, or None."""
    return _SETTINGS[-1][1] if _SETTINGS else None


def _fused_ready(head: HeadField, x: torch.Tensor) -> bool:
    """Whether ``head``'s density can take the fused kernel for points ``x`` (CPU float32, C++ grid, one
    hidden layer) and the machine chose it for this use (with or without a backward pass)."""
    return (
        x.device.type == "cpu"
        and len(head.sigma_net) == 3
        and head.cfg.grid.implementation != "torch"
        and head.grid.table.dtype == torch.float32
        and density_kernel(x.device, backward=torch.is_grad_enabled()) == "fused"
    )


@torch.inference_mode(False)  # the first ask may come from a render: its timers make their own tensors
def _time_density(kernel: str, device: torch.device, backward: bool, repeat: int = 5) -> float:
    """Best seconds of a fine head's density by ``kernel`` as training runs it (forward + backward, 32k
    points with per-row codes) or as rendering does (forward, 64k points, one code); raises RuntimeError if
    that kernel is unavailable."""
    if kernel == "fused" and not fused_density_available():
        raise RuntimeError("the fused C++ kernel did not build")
    g = torch.Generator().manual_seed(0)
    head = HeadField(fine_head_config(), consistency_dim=8).to(device)  # the real fine head's shapes
    rows = 32768 if backward else 65536
    x = torch.rand(rows, 3, generator=g).to(device)
    code = torch.randn(rows if backward else 1, head.cfg.code_dim, generator=g).to(device)

    def density() -> None:
        with torch.set_grad_enabled(backward):
            sigma, geo = head._density_by(kernel, x, code)
            if backward:
                (sigma.mean() + geo.square().mean()).backward()

    return best_seconds(density, repeat)


def density_kernel(device: torch.device | str = "cpu", backward: bool = False) -> str:
    """How head densities are computed on ``device`` for rendering or, with ``backward``, for training:
    ``"fused"`` (one C++ pass of grid + MLP, :mod:`nerfvc.field.fused`) or ``"torch"`` (C++ grid, then torch
    matmuls in :func:`mlp_dtype`), whichever measured faster here for that use (``NERFVC_KERNEL`` overrides
    both; always ``"torch"`` off the CPU)."""
    device = torch.device(device)
    if device.type != "cpu":
        return "torch"
    forced = forced_kernel()
    if forced is not None:
        return forced
    if not fused_density_available():  # NERFVC_NO_CPP or no compiler: whatever was cached, only torch runs
        return "torch"
    options = {k: (lambda k=k: _time_density(k, device, backward)) for k in ("fused", "torch")}
    use = "training" if backward else "rendering"
    return choose(f"head density kernel for {use}", device, "NERFVC_KERNEL", options)


class HeadField(nn.Module):
    """Canonical points ``x`` (N,3) in [0,1]^3 + per-point conditioning → density (N,), rgb (N,3).

    The MLPs run under autocast to the precision measured fastest on this machine
    (:func:`mlp_dtype`: bfloat16 where the CPU's bf16 units make it faster, float32 elsewhere); the grid
    is always float32."""

    def __init__(self, cfg: HeadFieldConfig, consistency_dim: int):
        super().__init__()
        self.cfg = cfg
        self.grid = HashGrid(cfg.grid)
        self.expr_proj = nn.Linear(cfg.expression_dim, cfg.code_dim)
        self.blend_dim = cfg.grid.features if cfg.blend_res else 0
        if cfg.blend_res:
            side = cfg.blend_res + 1
            if cfg.grid.log2_table < blend_table_log2(cfg.blend_res):
                raise ValueError(f"head field: blend_res {cfg.blend_res} needs (res+1)³ ≤ one hash level")
            # (side³, C, F), vertex-major as the kernel reads it (a corner's C·F values in one row): zero at
            # first, so a new model starts as one without blend shapes
            self.blend = nn.Parameter(torch.zeros(side**3, cfg.code_dim, cfg.grid.features))
        n_sigma = cfg.grid.out_dim + self.blend_dim + self.density_code_dim
        self.sigma_net = mlp(n_sigma, cfg.hidden, 1 + cfg.geo_dim, cfg.sigma_layers)
        n_color = cfg.geo_dim + self.color_code_dim + consistency_dim + (3 if cfg.use_view_dir else 0)
        self.color_net = mlp(n_color, cfg.hidden, 3, cfg.color_layers)
        # (out_dim,) weight of each hash feature in the density MLP while training opens the levels coarse to
        # fine (set_level_window); None: every level at full weight, as a trained field always is
        self.level_weights: torch.Tensor | None = None

    def set_level_window(self, alpha: float | None) -> None:
        """Open the hash levels coarse to fine (Nerfies' windowed encoding, here on hash levels): level l
        weighs (1 − cos(π·clamp(alpha − l, 0, 1))) / 2, so ``alpha`` = L opens all L levels; None = all."""
        if alpha is None or alpha >= self.cfg.grid.levels:
            self.level_weights = None
            return
        lvl = torch.arange(self.cfg.grid.levels, dtype=torch.float32)
        w = (1 - torch.cos(math.pi * (alpha - lvl).clamp(0, 1))) / 2  # (L,)
        self.level_weights = w.repeat_interleave(self.cfg.grid.features).to(self.expr_proj.weight.device)

    @property
    def density_code_dim(self) -> int:
        """How many density-MLP inputs the expression code takes (0 without ``cfg.density_code``)."""
        return self.cfg.code_dim if self.cfg.density_code else 0

    @property
    def color_code_dim(self) -> int:
        """How many colour-MLP inputs the expression code takes (0 without ``cfg.color_code``)."""
        return self.cfg.code_dim if self.cfg.color_code else 0

    def expression_code(self, expression: torch.Tensor) -> torch.Tensor:
        """Normalised expressions (R,E) → codes (R,code_dim)."""
        return self.expr_proj(expression)

    def blend_table(self, code: torch.Tensor) -> torch.Tensor:
        """One frame's code (1,C) → its blend shapes Σ_k c_k·B_k as one dense level (side³,F)."""
        n_vert, n_codes, n_feat = self.blend.shape
        # one (V, C·F) x (C·F, F) product on the table as stored (einsum copied the whole table first)
        mix = torch.kron(code.reshape(n_codes, 1), torch.eye(n_feat, device=code.device, dtype=code.dtype))
        return self.blend.view(n_vert, n_codes * n_feat) @ mix

    def blend_features(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Points (N,3) and codes (N,C) or (1,C) → blend-shape features Σ_k c_k·B_k(x) (N,blend_dim)
        ((N,0) without blend shapes)."""
        if not self.blend_dim:
            return x.new_zeros(x.shape[0], 0)
        return blend_lookup(x, self.blend, code, self.cfg.blend_res, cpp=self.grid.uses_cpp(x))

    def density(self, x: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N,3), ``code`` (N,C) or (1,C) → sigma (N,), geometry feature (N,geo_dim)."""
        return self._density_by("fused" if _fused_ready(self, x) else "torch", x, code)

    def _density_by(
        self, kernel: str, x: torch.Tensor, code: torch.Tensor, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`density` by ``kernel``: ``"fused"`` (one C++ pass, float32, differentiable) or ``"torch"``
        (grid, then the MLP under autocast to ``dtype``, default :func:`mlp_dtype`)."""
        layers = linears(self.sigma_net)
        first, second = layers[0], layers[-1]
        blend = self.blend_features(x, code)  # (N,blend_dim)
        if kernel == "fused":
            g, nb = self.cfg.grid.out_dim, self.blend_dim
            dc = self.density_code_dim
            b1 = torch.addmm(first.bias.view(1, -1), code[:, :dc], first.weight[:, g + nb :].t())  # (1|N,H)
            if nb:
                b1 = torch.addmm(b1, blend, first.weight[:, g : g + nb].t())  # (N,H)
            w1 = first.weight[:, :g].t()  # (g,H)
            if self.level_weights is not None:  # a closed level's features reach nothing, nor get gradients
                w1 = w1 * self.level_weights[:, None]
            w1, w2 = w1.contiguous(), second.weight.t().contiguous()
            x = x.contiguous().float()
            h = FusedDensityFn.apply(x, self.grid.table, self.grid.res, w1, b1.contiguous(), w2, second.bias)
        else:
            feats = self.grid(x)
            if self.level_weights is not None:
                feats = feats * self.level_weights
            dtype = dtype or mlp_dtype(x.device)
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
                parts = [feats, blend, code[:, : self.density_code_dim]]
                h = self.sigma_net[1:](split_linear(first, parts)).float()
        return trunc_exp(h[:, 0] - 1.0), h[:, 1:]

    def forward(
        self, x: torch.Tensor, code: torch.Tensor, view_dir: torch.Tensor, consistency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N,3), ``code`` (N,C) or (1,C), ``view_dir`` (N,3), ``consistency`` (N,K) or (1,K) →
        sigma (N,), rgb (N,3)."""
        sigma, geo = self.density(x, code)
        return sigma, self._color(geo, code, view_dir, consistency, mlp_dtype(x.device))

    def _color(
        self,
        geo: torch.Tensor,
        code: torch.Tensor,
        view_dir: torch.Tensor,
        consistency: torch.Tensor,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Geometry features (N,geo), codes, view directions (N,3), consistency (N,K) or (1,K) → rgb (N,3),
        the MLP under autocast to ``dtype``."""
        parts = [geo, code[:, : self.color_code_dim], consistency] + (
            [view_dir] if self.cfg.use_view_dir else []
        )
        with torch.autocast(geo.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return torch.sigmoid(self.color_net[1:](split_linear(linears(self.color_net)[0], parts)).float())


@dataclass
class TorsoFieldConfig:
    planes: PlaneGridConfig = field(default_factory=PlaneGridConfig)
    pose_dim: int = 12
    code_dim: int = 8  # the torso's own learnable code
    hidden: int = 64
    deform_hidden: int = 32
    max_offset: float = 0.1  # largest deformation, in normalised image units
    # the sender's torso shift (T,) also enters both MLPs, times shift_scale (0: it only moves the lookup)
    shift_inputs: int = 0
    shift_scale: float = 50.0  # a shift of 2% of the frame reads as 1


class TorsoField(nn.Module):
    """Image coordinates ``uv`` (N,2) in [0,1]^2 + normalised head pose (N,12) (+ the torso shift, if the
    sender measures one) → rgb (N,3), alpha (N,)."""

    shift_lo: torch.Tensor  # buffers (see __init__)
    shift_hi: torch.Tensor

    def __init__(self, cfg: TorsoFieldConfig, consistency_dim: int):
        super().__init__()
        self.cfg = cfg
        self.code = nn.Parameter(torch.zeros(cfg.code_dim))
        self.deform = mlp(2 + cfg.pose_dim + cfg.code_dim + cfg.shift_inputs, cfg.deform_hidden, 2, 2)
        nn.init.zeros_(linears(self.deform)[-1].weight)
        nn.init.zeros_(linears(self.deform)[-1].bias)
        self.planes = PlaneGrid(cfg.planes)
        n_in = cfg.planes.out_dim + cfg.pose_dim + cfg.code_dim + consistency_dim + cfg.shift_inputs
        self.net = mlp(n_in, cfg.hidden, 4, 2)
        # (T,) the training range of the shift the MLPs take (set_shift_range); a measurement past it (a
        # turn of 6 px on one of german's held-out frames) is clamped, as the expression is
        self.register_buffer("shift_lo", torch.full((cfg.shift_inputs,), -torch.inf))
        self.register_buffer("shift_hi", torch.full((cfg.shift_inputs,), torch.inf))

    def forward(
        self,
        uv: torch.Tensor,
        pose: torch.Tensor,
        consistency: torch.Tensor,
        shift: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``uv`` (N,2), normalised pose (N,12) or (1,12), consistency (N,K) or (1,K), torso ``shift`` (N,2)
        or (1,2) (the body's image motion: the canonical torso is looked up at ``uv - shift``; (N,4) or (1,4)
        with the band's halves, whose last two only the MLPs take) → rgb (N,3), alpha (N,)."""
        if shift is not None:
            uv = uv - shift[:, :2]
        code = self.code.view(1, -1)
        moved = self.shift_input(shift)  # (N,T), (1,T) or (1,0)
        # inputs shared by all rows ((1,d): one frame) enter the first layers once, not once per pixel
        h = self.deform[1:](split_linear(linears(self.deform)[0], [uv, pose, code, moved]))
        offset = torch.tanh(h) * self.cfg.max_offset  # (N,2)
        feat = self.planes((uv + offset).clamp(0, 1))  # (N,P)
        parts = [feat, pose, code, consistency, moved]
        out = self.net[1:](split_linear(linears(self.net)[0], parts))  # (N,4)
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3])

    def shift_input(self, shift: torch.Tensor | None) -> torch.Tensor:
        """The torso shift (N,T) or (1,T) as the MLPs take it: clamped into the training range and scaled,
        or (1,0) when they take none."""
        if not self.cfg.shift_inputs:
            return self.code.new_zeros(1, 0)
        if shift is None or shift.shape[-1] != self.cfg.shift_inputs:
            raise ValueError(f"this torso field takes a torso shift of {self.cfg.shift_inputs} values")
        return torch.maximum(torch.minimum(shift, self.shift_hi), self.shift_lo) * self.cfg.shift_scale

    def set_shift_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """The range (T,), (T,) the MLPs' shift input is clamped into (the training frames')."""
        self.shift_lo.copy_(lo)
        self.shift_hi.copy_(hi)
