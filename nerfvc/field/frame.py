"""Fields specialised to one frame for the receiver's frame renderer (:mod:`nerfvc.render.fast`): the frame's
codes (expression, consistency, pose) are folded into the first-layer biases once, so a point or pixel costs
only its own features. :class:`FrameHead` and :class:`FrameTorso` run as fused C++ passes
(:mod:`nerfvc.field.fused`) where this machine chose the fused kernels, else as plain torch twins of
:class:`HeadField` / :class:`TorsoField` (tested against each other in ``tests/render/test_fast.py``)."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from nerfvc.field.fields import (
    HeadField,
    TorsoField,
    fine_head_config,
    forced_kernel,
    linears,
    mlp_dtype,
    trunc_exp,
)
from nerfvc.field.fused import fused_density_available, fused_march, fused_torso, pack_half_pairs
from nerfvc.machine import best_seconds, choose

GRID_STORAGES = ("fp16", "fp32")
KERNELS = ("fused", "torch")


def render_kernel(device: torch.device | str = "cpu") -> str:
    """How the frame renderer runs on ``device``: ``"fused"`` (the C++ passes of :mod:`nerfvc.field.fused`)
    or ``"torch"`` (their pure-torch twins), whichever marched a synthetic frame faster here
    (``NERFVC_KERNEL`` or an enclosing ``field_settings`` overrides; ``"torch"`` off the CPU or where the
    C++ kernels did not build). Timed on whole marches, not on the density alone: the density kernels can
    tie while the fused march renders a frame 2-3x faster than the torch one."""
    device = torch.device(device)
    if device.type != "cpu" or not fused_density_available():
        return "torch"
    forced = forced_kernel()
    if forced is not None:
        return forced
    options = {k: (lambda k=k: _time_march(False, kernel=k)) for k in KERNELS}
    return choose("frame renderer kernels", device, "NERFVC_KERNEL", options)


def grid_storage(device: torch.device | str = "cpu") -> str:
    """How the fused frame renderer reads the hash grids on ``device``: ``"fp16"`` (feature pairs packed as
    float16: one gather per corner, half the cache, widened by integer arithmetic) or ``"fp32"``, whichever
    marched a synthetic frame faster here (measured on this Xeon: fp16 ~20% faster with AVX-512, within a few
    per cent either way with AVX2);
    ``NERFVC_GRID_STORAGE`` overrides; ``"fp32"`` wherever the fused kernels do not run."""
    device = torch.device(device)
    if render_kernel(device) != "fused":
        return "fp32"
    options = {k: (lambda k=k: _time_march(k == "fp16")) for k in GRID_STORAGES}
    return choose("hash grid storage for rendering", device, "NERFVC_GRID_STORAGE", options)


@torch.inference_mode(False)  # the first ask may come from a render: the timer makes its own tensors
def _time_march(half: bool, repeat: int = 5, kernel: str = "fused") -> float:
    """Best seconds of a fused march of 8281 rays × 12 samples through a random fine head: a 91 × 91 pixel
    grid of rays from one camera, sampled close together around a surface, as in a frame (random rays through
    the whole box miss the caches far more often than a frame's points, and favoured the half tables on an
    AVX2 build where a real frame was 4% slower with them). ``kernel`` ``"torch"``: the same points through
    the torch twins (density and colour, without compositing)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = HeadField(fine_head_config(), consistency_dim=8)
        head.grid.table.normal_(0, 1, generator=g)
        head.blend.normal_(0, 1, generator=g)
        code = torch.randn(1, head.cfg.code_dim, generator=g)
        dtype = torch.float32 if kernel == "fused" else None  # the torch MLPs as they would run here
        frame = FrameHead(head, code, torch.zeros(1, 8), dtype, half, kernel=kernel)
        side = 91
        u = torch.linspace(0.2, 0.8, side)  # neighbours ~3 cells apart on the finest level, as at 256²
        target = torch.stack([*torch.meshgrid(u, u, indexing="xy"), torch.ones(side, side)], -1).view(-1, 3)
        origin = torch.tensor([0.5, 0.5, -1.0]).expand_as(target).contiguous()  # (n,3) one camera
        direction = torch.nn.functional.normalize(target - origin, dim=-1)
        # the samples of a ray close together around a "surface" at z = 0.5, as importance sampling puts them
        edges = (torch.linspace(1.45, 1.55, 13) / direction[:, 2:]).contiguous()  # (n,13): z = 0.45 ... 0.55
        box = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
        occupancy = torch.ones(16, 16, 16, dtype=torch.bool)
        if kernel == "torch":
            mid = 0.5 * (edges[:, 1:] + edges[:, :-1])  # (n,12)
            x = (origin[:, None] + direction[:, None] * mid[..., None]).view(-1, 3).clamp(0, 1)
            view = frame.view_bias(direction).repeat_interleave(mid.shape[1], 0)  # (n·12,H)

            def torch_march() -> None:
                _, geo = frame.density(x)
                frame.color(geo, view)

            return best_seconds(torch_march, repeat)
        if frame.fused is None:
            raise RuntimeError("the fused C++ kernel did not build")
        args = (origin, direction, edges, box, occupancy, frame.fused, frame.fused_color, 2, 0.0)
        # as the frame's fine pass runs it: no per-sample weights written
        return best_seconds(lambda: fused_march(*args, frame.half_table, with_weights=False), repeat)


_Packed = tuple[torch.Tensor, int, torch.Tensor]  # a head's table, its version when packed, the packed table
_PACKED: weakref.WeakKeyDictionary[HeadField, _Packed] = weakref.WeakKeyDictionary()


def _version(table: torch.Tensor) -> int | None:
    """``table``'s version counter (bumped by every in-place change), or None for an inference tensor (a model
    built under ``torch.inference_mode``), whose changes cannot be seen: copies of it are never reused."""
    return None if table.is_inference() else table._version


def _packed_grid(head: HeadField) -> torch.Tensor:
    """:func:`pack_half_pairs` of ``head``'s hash table, packed once and again only when the table changes
    (a training step, a loaded checkpoint), not for every frame."""
    table = head.grid.table
    version = _version(table)
    if version is None:
        return pack_half_pairs(table)
    cached = _PACKED.get(head)
    if cached is None or cached[0] is not table or cached[1] != version:
        cached = _PACKED[head] = (table, version, pack_half_pairs(table))
    return cached[2]


class _BlendTables:
    """A copy of a head's hash table with one more level for a frame's blend shapes: (L+1,T,F) float32 and,
    when asked, its float16 pairs (L+1,T). The L levels are copied when the head's table changed since; a
    frame then writes only its own level."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.version = -1  # of the source when copied (-1: an inference tensor, copied again every time)
        self.table = torch.empty(0)
        self.packed: torch.Tensor | None = None

    @torch.inference_mode()
    def fill(self, head: HeadField, level: torch.Tensor, half: bool) -> None:
        """Levels 0..L-1 from ``head`` (if stale), level L from ``level`` (V,F), V ≤ T."""
        table = head.grid.table
        n_levels, size, n_feat = table.shape
        version = _version(table)
        if version is None or self.source is not table or self.version != version:
            self.table = torch.zeros(n_levels + 1, size, n_feat)
            self.table[:n_levels] = table
            self.packed = None
            self.source, self.version = table, -1 if version is None else version
        self.table[n_levels, : level.shape[0]] = level
        if half:
            if self.packed is None:
                self.packed = torch.zeros(n_levels + 1, size, dtype=torch.int32)
                self.packed[:n_levels] = _packed_grid(head)
            self.packed[n_levels, : level.shape[0]] = pack_half_pairs(level[None])[0]


_FREE_TABLES: weakref.WeakKeyDictionary[HeadField, list[_BlendTables]] = weakref.WeakKeyDictionary()


def _lend_blend_tables(owner: object, head: HeadField) -> _BlendTables:
    """Blend tables of ``head`` that ``owner`` alone uses until it is freed (then they are lent again), so
    frames rendered at the same time never share one."""
    free = _FREE_TABLES.setdefault(head, [])
    try:
        tables = free.pop()
    except IndexError:
        tables = _BlendTables()
    weakref.finalize(owner, free.append, tables)
    return tables


class FrameHead:
    """A :class:`HeadField` specialised to one frame: expression code (1,C) and consistency code (1,K) are
    folded into the first-layer biases, and the expression blend shapes collapse into one more dense level of
    the hash table (:meth:`HeadField.blend_table`), so evaluating a point costs only its grid features. It
    runs the fused C++ passes where this machine measured them faster (``kernel``, default
    :func:`render_kernel`); the torch MLPs run in ``dtype`` (default: the precision measured fastest here,
    :func:`mlp_dtype`, as in training). ``half_table``: the fused march reads the grid features as float16
    pairs (half the gathers and cache; ``benchmarks/render.py`` measures the cost in PSNR)."""

    def __init__(
        self,
        head: HeadField,
        code: torch.Tensor,
        consistency: torch.Tensor,
        dtype: torch.dtype | None = None,
        half_table: bool = False,
        kernel: str | None = None,
    ):
        cfg = head.cfg
        g, k, geo = cfg.grid.out_dim + head.blend_dim, consistency.shape[-1], cfg.geo_dim
        self.grid = head.grid
        self.table: torch.Tensor = head.grid.table  # (L,T,F)
        self.res: torch.Tensor = head.grid.res  # (L,)
        blend: _BlendTables | None = None
        fused = (kernel or render_kernel(code.device)) == "fused"
        use_half = half_table and cfg.grid.features == 2 and fused
        if head.blend_dim:  # the frame's blend shapes as level L (dense: (res+1)³ ≤ T)
            blend = _lend_blend_tables(self, head)
            blend.fill(head, head.blend_table(code), use_half)  # (side³,F) into level L
            self.table = blend.table
            self.res = torch.cat([self.res, self.res.new_tensor([cfg.blend_res])])
        self.dtype = dtype = dtype or mlp_dtype(code.device)
        sigma, color = linears(head.sigma_net), linears(head.color_net)
        if len(sigma) != 2 or len(color) != 2:
            raise ValueError("FrameHead supports one hidden layer per MLP (sigma_layers = color_layers = 1)")
        s0, s1 = sigma
        c0, c1 = color
        w1 = s0.weight[:, :g].t().contiguous()  # (G,H)
        dc = head.density_code_dim
        b1 = s0.bias.view(1, -1) + code[:, :dc] @ s0.weight[:, g : g + dc].t()  # (1,H)
        w2, b2 = s1.weight.t().contiguous(), s1.bias  # (H,1+geo), (1+geo,)
        cc = head.color_code_dim  # colour-MLP inputs: geo, code (cc of them), consistency (k), view (3)
        b = c0.bias + code[:, :cc] @ c0.weight[:, geo : geo + cc].t()
        if k:
            b = b + consistency @ c0.weight[:, geo + cc : geo + cc + k].t()
        w_geo = c0.weight[:, :geo].t()  # (geo,H)
        w_view = c0.weight[:, geo + cc + k :].t() if cfg.use_view_dir else None  # (3,H)
        w3, b3 = c1.weight.t().contiguous(), c1.bias  # (H,3), (3,)
        self.fused: tuple[torch.Tensor, ...] | None = None  # float32 density weights of the C++ kernels
        self.fused_color: tuple[torch.Tensor, ...] = ()
        self.half_table: torch.Tensor | None = None
        if fused:
            self.fused = (self.table, self.res, w1, b1.contiguous(), w2, b2)
            wc1 = w_geo if w_view is None else torch.cat([w_geo, w_view])  # (geo[+3],H)
            self.fused_color = (wc1.contiguous(), b.view(1, -1).contiguous(), w3, b3)
            if use_half:
                self.half_table = _packed_grid(head) if blend is None else blend.packed  # (L[+1],T) int32
            return
        self.w1, self.b1, self.w2, self.b2 = (t.to(dtype) for t in (w1, b1, w2, b2))
        self.b_color = b.to(dtype)  # (1,H)
        self.w_geo = w_geo.to(dtype)
        self.w_view = None if w_view is None else w_view.to(dtype)
        self.w3, self.b3 = w3.to(dtype), b3.to(dtype)

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (N,3) in [0,1]³ → sigma (N,) float32, geometry feature (N,geo) in ``dtype``."""
        h = torch.addmm(self.b1, self.grid.lookup(x, self.table, self.res).to(self.dtype), self.w1).relu_()
        h = torch.addmm(self.b2, h, self.w2)
        return trunc_exp(h[:, 0].float() - 1.0), h[:, 1:]

    def view_bias(self, view: torch.Tensor) -> torch.Tensor:
        """Unit view directions (R,3) → their first-layer colour term (R,H)."""
        if self.w_view is None:
            return self.b_color.expand(view.shape[0], -1)
        return torch.addmm(self.b_color, view.to(self.dtype), self.w_view)

    def color(self, geo: torch.Tensor, view_bias: torch.Tensor) -> torch.Tensor:
        """Geometry features (N,geo) and per-point view terms (N,H) → rgb (N,3) float32."""
        h = torch.addmm(view_bias, geo, self.w_geo).relu_()
        return torch.sigmoid(torch.addmm(self.b3, h, self.w3).float())


class FrameTorso:
    """A :class:`TorsoField` specialised to one frame: the pose (1,12), the torso's own code and the
    consistency code (1,K) are folded into the first-layer biases of its two MLPs. Runs as one fused C++
    pass over pixels where this machine chose the fused kernels, else as the field itself."""

    def __init__(
        self, torso: TorsoField, pose: torch.Tensor, consistency: torch.Tensor, shift: torch.Tensor | None
    ):
        self.field, self.pose, self.consistency, self.shift = torso, pose, consistency, shift
        self.fused: tuple | None = None
        if render_kernel(pose.device) != "fused":
            return
        code = torso.code.view(1, -1)
        deform = [m for m in torso.deform if isinstance(m, nn.Linear)]
        net = [m for m in torso.net if isinstance(m, nn.Linear)]
        n_feat = torso.cfg.planes.out_dim
        moved = torso.shift_input(shift)  # (1,T) or (1,0)
        d0 = split_bias(deform[0], 2, [pose, code, moved])
        n0 = split_bias(net[0], n_feat, [pose, code, consistency, moved])
        self.fused = (
            [p[0].contiguous() for p in torso.planes.planes],  # (C,r,r) each
            [deform[0].weight[:, :2].t().contiguous()] + [m.weight.t().contiguous() for m in deform[1:]],
            [d0] + [m.bias for m in deform[1:]],
            [net[0].weight[:, :n_feat].t().contiguous()] + [m.weight.t().contiguous() for m in net[1:]],
            [n0] + [m.bias for m in net[1:]],
            torso.cfg.max_offset,
        )

    def __call__(self, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image coordinates ``uv`` (N,2) → rgb (N,3), alpha (N,)."""
        rgba = self.rgba(uv)
        return rgba[:, :3], rgba[:, 3]

    def rgba(self, uv: torch.Tensor) -> torch.Tensor:
        """Image coordinates ``uv`` (N,2) → rgb and alpha as one (N,4) tensor."""
        if self.fused is None:
            rgb, alpha = self.field(uv, self.pose, self.consistency, self.shift)
            return torch.cat([rgb, alpha[:, None]], 1)
        if self.shift is not None:
            uv = uv - self.shift[:, :2]
        return fused_torso(uv.contiguous(), *self.fused)  # (N,4)


def split_bias(layer: nn.Linear, n_rows: int, shared: list[torch.Tensor]) -> torch.Tensor:
    """The bias (H,) of ``layer`` with the inputs ``shared`` (1,d) each, which follow its first ``n_rows``
    per-row inputs, folded in."""
    b = layer.bias.view(1, -1)
    i = n_rows
    for x in shared:
        d = x.shape[-1]
        if d:
            b = b + x @ layer.weight[:, i : i + d].t()
        i += d
    return b.view(-1).contiguous()
