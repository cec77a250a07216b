"""Frame renderer for the receiver: the trained model, rendered with far fewer field evaluations.

Training renders independent rays (``PortraitNeRF.render_rays``). A receiver renders whole frames, which
allows savings that do not change the model:

1. **One frame, one code.** The expression and consistency codes are the same for every sample of a frame,
   so they are folded into the first-layer biases of each MLP (:mod:`nerfvc.field.frame`) instead of being
   concatenated to every point.
2. **A coarse pass at a fixed low resolution.** The coarse head field's density (no colour; above 256 px
   also the fine field's, the bin-wise maximum of the two: ``proposal``) runs on a pixel grid of about
   ``coarse_size`` pixels on the longer side, whatever the output size (every 2nd pixel below that). Each
   full-resolution pixel takes the bin-wise maximum of its (up to 2×2) coarse neighbours' weights —
   conservative at silhouettes — and draws its fine samples from that by inverse CDF, as training does;
   pixels none of whose neighbours saw the head skip it.
3. **Early ray termination.** Both passes march in chunks of samples and drop rays whose transmittance is
   spent, so samples behind the skin are never evaluated; the torso runs only where the head is not opaque.
   Fine samples that weigh almost nothing (``color_min_weight``, the empty space before the skin) skip the
   colour MLP.
4. **The torso where it is.** The torso field runs first on the coarse pass's pixel grid; full-resolution
   pixels whose coarse cell (dilated by one sample) saw no torso alpha above ``torso_tail`` (one 8-bit level)
   show the background without evaluating it (about half of a portrait frame). Above ``torso_size`` pixels
   (512) it is evaluated on a ``torso_size`` grid and bilinearly upsampled: its MLP is not band-limited by its
   feature planes, so a coarser grid blurs (german 512², a 256 grid: LPIPS 0.081 instead of 0.068).

5. **Fused C++ passes** (:mod:`nerfvc.field.fused`) where this machine chose the fused kernels: each head
   march (occupancy lookup, hash grid — read as float16 pairs where that measured faster, density and colour
   MLPs, compositing, early termination), the fine bins, and the torso run as one pass each with no
   per-sample tensor, and the ray/box test of every pixel is one pass too;
   :func:`march_torch`, ``intersect_box`` and the fields themselves are the tested pure-torch twins.

``benchmarks/render.py`` measures it against ``render_rays`` (PSNR to the ground truth and to the reference
render, field points, time); ``tests/train/test_train.py`` asserts ≥ 38 dB between the two on a tiny scene.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from nerfvc.field.frame import FrameHead, FrameTorso, grid_storage
from nerfvc.field.fused import Marched, fused_march, ray_box, unit_fine_edges
from nerfvc.render.model import PortraitNeRF
from nerfvc.render.rays import intersect_box, to_canonical
from nerfvc.render.samplers import importance
from nerfvc.render.volume import composite


@dataclass
class FastRenderConfig:
    """Knobs of :func:`render_frame` (defaults measured in ``benchmarks/render.py``)."""

    coarse_size: int = 64  # the coarse pass runs on every (longer side / coarse_size)-th pixel (at least 2nd)
    n_coarse: int = 24  # coarse samples per ray over the whole head box
    n_fine: int = 12  # fine samples per ray (at most as trained), importance-sampled from the coarse weights
    chunk: int = 2  # samples marched per step before dropping finished rays
    # coarse opacity below which a pixel has no head: above 256 px the fine field's faint haze around the head
    # (opacity 1e-3 to 1e-2) sent a halo of pixels to the fine march for nothing (8 clips, 512²: 6-21% faster
    # frames than at 1e-3, PSNR −0.0005 dB, LPIPS, DISTS, CSIM within 1e-4: benchmarks/results/
    # ab_render_tail.md)
    tail: float = 0.01
    # coarse torso alpha below which a pixel shows the background: one 8-bit level, so a torso this thin
    # changes no pixel by more than a level (german: 43% fewer torso rows at 256² and 512² than at 1e-3, the
    # frame the same to > 70 dB; bob 10% fewer)
    torso_tail: float = 1 / 255
    # a ray whose transmittance falls below this is finished (german 256²: 0.03 with chunks of 2 evaluates 13%
    # fewer points than 0.01 with chunks of 4, same PSNR to 3 decimals)
    stop_transmittance: float = 0.03
    # a ray stopped that way is drawn opaque, its colour the mean of what it marched through (the samples it
    # skipped lie behind the skin): left as it stopped, up to 3% of the torso or background showed through
    # the face
    fill_stopped: bool = True
    # fine samples weighing at most this skip the colour MLP (german 256²: 21% of the fine samples; they
    # carried 3e-6 of the weight each on average)
    color_min_weight: float = 1e-4
    # larger frames evaluate the torso on this grid (longer side) and upsample it (german 512²: LPIPS 0.068
    # at 512, 0.081 on a 256 grid)
    torso_size: int = 512
    skip_background: bool = True  # the torso only where the coarse grid saw it (point 4 above)
    half_tables: bool | None = None  # hash grids read as float16 pairs; None: as measured (grid_storage)
    # the head fields whose density the coarse pass marches to place the fine samples: "coarse", the trained
    # coarse field, which has no expression blend shapes: on held-out expressions its weights miss where the
    # surface moved, and the 12 fine samples every pixel of a coarse cell shares then draw the cell as a
    # square; "fine", the frame's own geometry; "both", the bin-wise maximum of the two; "auto": "coarse" up
    # to ``proposal_size`` px (longer side), "both" above (docs/nerf.md "The mosaic is the frame renderer's":
    # 512², 8 clips, LPIPS -0.0026, DISTS -0.0020 against "coarse", frames 8-29% slower on AVX2)
    proposal: str = "auto"
    proposal_size: int = 256

    def __post_init__(self) -> None:
        if self.proposal not in ("auto", "coarse", "fine", "both"):
            raise ValueError(f"proposal must be auto, coarse, fine or both, not {self.proposal!r}")

    def proposal_for(self, height: int, width: int) -> str:
        """The proposal (``coarse``, ``fine`` or ``both``) a ``height`` × ``width`` frame uses."""
        if self.proposal != "auto":
            return self.proposal
        return "both" if max(height, width) > self.proposal_size else "coarse"

    def coarse_stride(self, height: int, width: int) -> int:
        """Pixel stride of the coarse pass for a ``height`` × ``width`` frame."""
        return max(2, round(max(height, width) / self.coarse_size))


class FrameRender(NamedTuple):
    """A rendered frame, row-major: colour (H·W,3) in [0,1], the head's opacity (H·W,) and its expected depth
    along each pixel's ray (H·W,) (camera z: ray directions have z = 1; 0 where no fine sample weighs)."""

    rgb: torch.Tensor
    head_alpha: torch.Tensor
    head_depth: torch.Tensor


def supports(model: PortraitNeRF) -> bool:
    """Whether :func:`render_frame` can render ``model`` (one hidden layer in each head MLP)."""
    heads = (model.coarse, model.fine)
    return all(len(h.sigma_net) == 3 and len(h.color_net) == 3 for h in heads)


def _march(
    model: PortraitNeRF,
    head: FrameHead,
    origin: torch.Tensor,
    direction: torch.Tensor,
    edges: torch.Tensor,
    cfg: FastRenderConfig,
    with_color: bool,
    with_weights: bool = True,
) -> Marched:
    """Volume-render rays (R,3) through bins ``edges`` (R,S+1) with early termination (rgb zeros unless
    ``with_color``, weights only ``with_weights``): one C++ pass where ``head`` runs the fused kernels, else
    :func:`march_torch`."""
    if head.fused is None:
        return march_torch(model, head, origin, direction, edges, cfg, with_color, with_weights)
    span = model.head_hi - model.head_lo
    box = torch.cat([model.head_lo, span, (1.0 / model.scale).view(1)]).float().contiguous()
    color = head.fused_color if with_color else None
    return fused_march(
        origin,
        direction,
        edges,
        box,
        model.occupancy.mask,
        head.fused,
        color,
        cfg.chunk,
        cfg.stop_transmittance,
        head.half_table,
        cfg.color_min_weight,
        with_weights,
    )


def march_torch(
    model: PortraitNeRF,
    head: FrameHead,
    origin: torch.Tensor,
    direction: torch.Tensor,
    edges: torch.Tensor,
    cfg: FastRenderConfig,
    with_color: bool,
    with_weights: bool = True,
) -> Marched:
    """Volume-render rays (R,3) through bins ``edges`` (R,S+1) with early termination (rgb zeros unless
    ``with_color``, weights only ``with_weights``)."""
    n_rays, n_s = edges.shape[0], edges.shape[1] - 1
    dev = edges.device
    weights = torch.zeros(n_rays, n_s, device=dev)
    rgb = torch.zeros(n_rays, 3, device=dev)
    trans = torch.ones(n_rays, device=dev)
    span = model.head_hi - model.head_lo
    vbias = head.view_bias(F.normalize(direction, dim=-1)) if with_color else None  # (R,H)
    active = torch.arange(n_rays, device=dev)
    for s0 in range(0, n_s, cfg.chunk):
        if active.numel() == 0:
            break
        e = edges[active, s0 : s0 + cfg.chunk + 1]  # (A,k+1)
        k = e.shape[1] - 1
        mid = 0.5 * (e[:, 1:] + e[:, :-1])  # (A,k)
        delta = (e[:, 1:] - e[:, :-1]) / model.scale
        pts = origin[active, None] + direction[active, None] * mid[..., None]  # (A,k,3)
        x = ((pts - model.head_lo) / span).clamp(0, 1)
        ri, si = model.occupancy.query(x).nonzero(as_tuple=True)
        sigma = torch.zeros(active.numel(), k, device=dev)
        if ri.numel():
            s, geo = head.density(x[ri, si])
            sigma = sigma.index_put((ri, si), s)
        alpha = 1.0 - torch.exp(-sigma * delta)  # (A,k)
        inside = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha], 1), 1)  # (A,k+1)
        w = trans[active, None] * alpha * inside[:, :-1]  # (A,k)
        weights[active, s0 : s0 + k] = w
        if vbias is not None and ri.numel():
            wp = w[ri, si]  # (N,)
            keep = (wp > cfg.color_min_weight).nonzero(as_tuple=True)[0]  # the samples that weigh
            c = head.color(geo[keep], vbias[active[ri[keep]]])  # (K,3)
            rgb.index_add_(0, active[ri[keep]], wp[keep, None] * c)
        trans[active] = trans[active] * inside[:, -1]
        active = active[trans[active] > cfg.stop_transmittance]
    mid = 0.5 * (edges[:, 1:] + edges[:, :-1])  # (R,S)
    depth = (weights * mid).sum(1) / weights.sum(1).clamp(min=1e-8)
    return Marched(weights if with_weights else weights[:0], rgb, 1.0 - trans, depth)


def _unit_fine_edges(
    coarse_w: torch.Tensor, neighbours: torch.Tensor, n: int, head: FrameHead
) -> torch.Tensor:
    """Fine bins (C,n+1) as fractions of a ray's [t_near, t_far]: inverse-CDF samples of the bin-wise maximum
    of the coarse weights (Pc,S) of each cell's ``neighbours`` (K,C) — one C++ pass where ``head`` is fused.
    Every pixel of a coarse cell shares its bins (they depend on the weights only)."""
    if head.fused is not None:
        return unit_fine_edges(coarse_w, neighbours, n, torch.get_num_threads())
    w = coarse_w[neighbours].amax(0)  # (C,S)
    base = torch.linspace(0, 1, coarse_w.shape[1] + 1, device=coarse_w.device)
    return importance(base.expand(w.shape[0], -1), w, n, jitter=False)


@functools.lru_cache(maxsize=8)
def _coarse_grid(
    height: int, width: int, stride: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """The coarse pass's pixel grid of a ``height`` × ``width`` frame (the same for every frame of a size):
    its pixels (Pc,) row-major, the (up to 2x2) corner rays of each coarse cell (4,Pc), each pixel's cell
    (H·W,) and the grid's rows and columns. Callers must not change the tensors."""
    ys = _strided(height, stride, device)
    xs = _strided(width, stride, device)
    cpix = (ys[:, None] * width + xs[None, :]).reshape(-1)  # (Pc,)
    ny, nx = ys.numel(), xs.numel()
    cy, cx = torch.arange(ny, device=device), torch.arange(nx, device=device)
    cy1, cx1 = (cy + 1).clamp(max=ny - 1), (cx + 1).clamp(max=nx - 1)
    corners = torch.stack([(r[:, None] * nx + c[None, :]).reshape(-1) for r in (cy, cy1) for c in (cx, cx1)])
    iy = torch.searchsorted(ys, torch.arange(height, device=device), right=True) - 1  # coarse row at/above
    ix = torch.searchsorted(xs, torch.arange(width, device=device), right=True) - 1
    cell = (iy[:, None] * nx + ix[None, :]).reshape(-1)  # (P,) each pixel's coarse cell
    return cpix, corners, cell, ny, nx


def _strided(n: int, stride: int, device: torch.device) -> torch.Tensor:
    """Every ``stride``-th index of ``range(n)``, always including the last one."""
    idx = torch.arange(0, n, stride, device=device)
    return idx if idx[-1] == n - 1 else torch.cat([idx, idx.new_tensor([n - 1])])


class FrameHeads(NamedTuple):
    """The head fields of one expression as a frame of one size marches them (:func:`frame_heads`)."""

    fine: FrameHead
    proposer: FrameHead  # the head the coarse pass marches first (with "both", the fine head is maxed in)


@torch.inference_mode()
def frame_heads(
    model: PortraitNeRF,
    expression: torch.Tensor,
    height: int,
    width: int,
    cfg: FastRenderConfig | None = None,
) -> FrameHeads:
    """Raw inputs (1,E+T) → the head fields a ``height`` × ``width`` frame of them marches: built once per
    expression (the pose does not enter them), so renders of one expression from several poses share them."""
    cfg = cfg or FastRenderConfig()
    expr_n, _ = model.split_input(expression)
    cons = model.consistency.view(1, -1)
    half = cfg.half_tables if cfg.half_tables is not None else grid_storage(expression.device) == "fp16"
    fine = FrameHead(model.fine, model.fine.expression_code(expr_n), cons, half_table=half)
    if cfg.proposal_for(height, width) == "fine":
        return FrameHeads(fine, fine)
    coarse = FrameHead(model.coarse, model.coarse.expression_code(expr_n), cons, half_table=half)
    return FrameHeads(fine, coarse)


@torch.inference_mode()
def render_frame(
    model: PortraitNeRF,
    dirs: torch.Tensor,
    uv: torch.Tensor,
    background: torch.Tensor,
    height: int,
    width: int,
    expression: torch.Tensor,
    pose: torch.Tensor,
    cfg: FastRenderConfig | None = None,
    heads: FrameHeads | None = None,
) -> FrameRender:
    """One frame: pixel directions (H·W,3) and uv (H·W,2) row-major, background (H·W,3) in [0,1], raw
    inputs (1,E+T) (expression, then the torso shift if the model has one) and pose (1,12) → the image
    (H·W,3) in [0,1] with its head's opacity and depth. ``heads``: :func:`frame_heads` of these inputs at
    this size, when the caller built them already."""
    cfg = cfg or FastRenderConfig()
    dev = dirs.device
    _, shift = model.split_input(expression)
    pose_n = (pose - model.pose_mean) / model.pose_std
    cons = model.consistency.view(1, -1)
    proposal = cfg.proposal_for(height, width)
    fine, proposer = heads or frame_heads(model, expression, height, width, cfg)

    origin, direction = to_canonical(dirs, pose)  # (P,3) each
    box = (origin, direction, model.head_lo, model.head_hi)
    t_near, t_far, hit = ray_box(*box) if fine.fused is not None else intersect_box(*box)  # (P,) each

    # coarse pass (density only) on the strided pixel grid
    cpix, corners, cell, ny, nx = _coarse_grid(height, width, cfg.coarse_stride(height, width), dev)
    # (index_select / index_copy_ below: 2-3x faster than advanced indexing on these shapes)
    coarse_w = torch.zeros(cpix.numel(), cfg.n_coarse, device=dev)  # (Pc,S)
    ch = hit.index_select(0, cpix).nonzero(as_tuple=True)[0]
    base = torch.linspace(0, 1, cfg.n_coarse + 1, device=dev)
    near_span = torch.stack([t_near, t_far - t_near], 1)  # (P,2)
    if ch.numel():
        rays = cpix.index_select(0, ch)
        ns = near_span.index_select(0, rays)  # (Rc,2)
        edges = torch.addcmul(ns[:, :1], ns[:, 1:], base)  # (Rc,S+1)
        o, d = origin.index_select(0, rays), direction.index_select(0, rays)  # (Rc,3) each
        w = _march(model, proposer, o, d, edges, cfg, False).weights
        if proposal == "both":
            w = torch.maximum(w, _march(model, fine, o, d, edges, cfg, False).weights)
        coarse_w.index_copy_(0, ch, w)

    # every pixel takes the bin-wise max of the weights of its coarse cell's (up to 2x2) corner rays
    cell_seen = (coarse_w.sum(1) > cfg.tail)[corners].any(0)  # (Pc,) a corner ray saw the head
    fine_pix = (hit & cell_seen.index_select(0, cell)).nonzero(as_tuple=True)[0]

    head_rgb = torch.zeros(dirs.shape[0], 3, device=dev)
    head_alpha = torch.zeros(dirs.shape[0], device=dev)
    head_depth = torch.zeros(dirs.shape[0], device=dev)
    if fine_pix.numel():
        unit = _unit_fine_edges(coarse_w, corners, cfg.n_fine, fine)  # (Pc,n+1)
        unit = unit.index_select(0, cell.index_select(0, fine_pix))  # (F,n+1)
        ns = near_span.index_select(0, fine_pix)  # (F,2)
        edges = torch.addcmul(ns[:, :1], ns[:, 1:], unit)
        o, d = origin.index_select(0, fine_pix), direction.index_select(0, fine_pix)  # (F,3) each
        marched = _march(model, fine, o, d, edges, cfg, True, with_weights=False)
        rgb, opacity = marched.rgb, marched.opacity  # (F,3) premultiplied, (F,)
        if cfg.fill_stopped:
            stopped = opacity >= 1 - cfg.stop_transmittance  # (F,)
            rgb = torch.where(stopped[:, None], rgb / opacity.clamp(min=1e-6)[:, None], rgb)
            opacity = torch.where(stopped, torch.ones_like(opacity), opacity)
        head_rgb.index_copy_(0, fine_pix, rgb)
        head_alpha.index_copy_(0, fine_pix, opacity)
        head_depth.index_copy_(0, fine_pix, marched.depth)

    # torso and background only where the head lets them through, and the torso only where the coarse grid
    # (dilated by one sample) saw it: the rest is background
    behind = (head_alpha < 1 - 1e-3).nonzero(as_tuple=True)[0]
    torso_rgb = torch.zeros_like(head_rgb)
    torso_alpha = torch.ones_like(head_alpha)
    if behind.numel():
        torso = FrameTorso(model.torso, pose_n, cons, shift)
        if max(height, width) > cfg.torso_size:
            rgba = _torso_upsampled(torso, uv, height, width, cfg.torso_size).index_select(0, behind)  # (B,4)
        else:
            if cfg.skip_background:
                _, coarse_alpha = torso(uv.index_select(0, cpix))  # (Pc,)
                seen = (coarse_alpha > cfg.torso_tail).float().view(1, 1, ny, nx)
                seen = F.max_pool2d(seen, 3, 1, 1).view(-1) > 0  # (Pc,) dilated by one coarse sample
                torso_alpha.index_fill_(0, behind, 0.0)
                cell_torso = seen[corners].any(0)  # (Pc,) a corner's dilated cell saw the torso
                behind = behind[cell_torso.index_select(0, cell.index_select(0, behind))]
            rgba = torso.rgba(uv.index_select(0, behind))  # (B,4)
        torso_rgb.index_copy_(0, behind, rgba[:, :3])
        torso_alpha.index_copy_(0, behind, rgba[:, 3])
    rgb = composite(head_rgb, head_alpha, torso_rgb, torso_alpha, background)
    return FrameRender(rgb, head_alpha, head_depth)


def _torso_upsampled(torso: FrameTorso, uv: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """The torso of a ``height`` × ``width`` frame with pixel coords ``uv`` (H·W,2), evaluated on a grid of
    ``size`` px on the longer side at the same image positions, bilinearly upsampled → rgba (H·W,4)."""
    k = size / max(height, width)
    h, w = max(2, round(height * k)), max(2, round(width * k))
    ys = (torch.arange(h, device=uv.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=uv.device, dtype=torch.float32) + 0.5) / w
    grid_uv = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)  # (h·w,2) as (u,v)
    small = torso.rgba(grid_uv).t().reshape(1, 4, h, w)
    g = (uv * 2 - 1).view(1, -1, 1, 2)  # (1,P,1,2) sample positions in the small grid's [-1,1] frame
    return F.grid_sample(small, g, mode="bilinear", padding_mode="border", align_corners=False)[
        0, :, :, 0
    ].t()
