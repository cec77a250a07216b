"""The portrait model: coarse + fine head fields, 2D torso, consistency code, occupancy grid, rendering.

``render_rays`` is the one code path used by training and by the receiver; only ``train=True`` changes it
(jittered samples, no early exits that would break autograd).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nerfvc.field.blend import grid_roughness
from nerfvc.field.encodings import HashGridConfig, PlaneGridConfig
from nerfvc.field.fields import (
    HeadField,
    HeadFieldConfig,
    TorsoField,
    TorsoFieldConfig,
    coarse_head_config,
    fine_head_config,
)
from nerfvc.render.rays import intersect_box, to_canonical
from nerfvc.render.samplers import OccupancyGrid, importance, stratified
from nerfvc.render.volume import accumulate, composite, distortion, render_weights


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`PortraitNeRF` (saved as ``nerf.json``)."""

    head_lo: list[float] = field(default_factory=lambda: [-1.0, -1.0, -1.0])  # canonical box corners
    head_hi: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    expression_dim: int = 79
    # only the first K normalised expression coefficients reach the fields (0: all); the others read as their
    # training mean, so the codec's coarse steps on the minor PCA components cannot move the picture
    expression_used: int = 0
    torso_dims: int = 0  # 2: the input vector ends with the sender's torso shift (nerfvc.face.torso)
    coarse: HeadFieldConfig = field(default_factory=coarse_head_config)
    fine: HeadFieldConfig = field(default_factory=fine_head_config)
    torso: TorsoFieldConfig = field(default_factory=TorsoFieldConfig)
    consistency_dim: int = 8  # size of the head-torso consistency code (0: none)
    n_coarse: int = 24
    # fine samples per ray in training and in the training renderer (the frame renderer takes at most 12)
    n_fine: int = 24
    occupancy_res: int = 64
    occupancy_alpha: float = 0.01  # a cell is occupied if one coarse step through it is at least this opaque

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        for key in ("coarse", "fine"):
            h = dict(d[key])
            h.pop("bf16", None)  # models written before the precision was measured per machine
            h["grid"] = HashGridConfig(**h["grid"])
            d[key] = HeadFieldConfig(**h)
        t = dict(d["torso"])
        t["planes"] = PlaneGridConfig(**t["planes"])
        d["torso"] = TorsoFieldConfig(**t)
        return cls(**d)


# The expression range a model renders: each expression dimension is clamped, at render time only, to the
# EXPRESSION_RANGE_QUANTILE … 1 − EXPRESSION_RANGE_QUANTILE quantiles of the training frames' (held-out
# expressions past them drew out-of-range colour as blocky mosaics; docs/nerf.md "Expression range").
EXPRESSION_RANGE_QUANTILE = 0.01


def rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-ray inputs (R,D) at rows ``idx``; (1,D), one input shared by every ray, as it is."""
    return t if t.shape[0] == 1 else t[idx]


class PortraitNeRF(nn.Module):
    """Expression- and pose-driven portrait: head NeRF (coarse + fine) over a 2D torso over a background."""

    head_lo: torch.Tensor  # buffers (see __init__)
    head_hi: torch.Tensor
    expr_mean: torch.Tensor
    expr_std: torch.Tensor
    expr_used: torch.Tensor
    expr_lo: torch.Tensor
    expr_hi: torch.Tensor
    pose_mean: torch.Tensor
    pose_std: torch.Tensor
    # buffers a model saved before they existed may lack (loaded as their defaults: no expression range, no
    # torso-shift range)
    OPTIONAL_BUFFERS = frozenset({"expr_lo", "expr_hi", "torso.shift_lo", "torso.shift_hi"})

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cfg.coarse.expression_dim = cfg.fine.expression_dim = cfg.expression_dim
        self.coarse = HeadField(cfg.coarse, cfg.consistency_dim)
        self.fine = HeadField(cfg.fine, cfg.consistency_dim)
        self.torso = TorsoField(cfg.torso, cfg.consistency_dim)
        self.consistency = nn.Parameter(torch.zeros(cfg.consistency_dim))
        self.occupancy = OccupancyGrid(cfg.occupancy_res)
        self.register_buffer("head_lo", torch.tensor(cfg.head_lo, dtype=torch.float32))
        self.register_buffer("head_hi", torch.tensor(cfg.head_hi, dtype=torch.float32))
        # normalisation of the conditioning inputs (set from the training split)
        self.register_buffer("expr_mean", torch.zeros(cfg.expression_dim))
        self.register_buffer("expr_std", torch.ones(cfg.expression_dim))
        used = torch.arange(cfg.expression_dim) < (cfg.expression_used or cfg.expression_dim)
        self.register_buffer("expr_used", used.float(), persistent=False)  # (E,) 1 = reaches the fields
        # (E,) the expression range rendered (within_training_range); unbounded until set_normalisation
        self.register_buffer("expr_lo", torch.full((cfg.expression_dim,), -torch.inf))
        self.register_buffer("expr_hi", torch.full((cfg.expression_dim,), torch.inf))
        self.register_buffer("pose_mean", torch.zeros(12))
        self.register_buffer("pose_std", torch.ones(12))

    @property
    def input_dim(self) -> int:
        """Length of the per-frame input vector: expression, then the torso shift if the model has one."""
        return self.cfg.expression_dim + self.cfg.torso_dims

    def split_input(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame inputs (R, E+T) → normalised expression (R,E), torso shift (R,T) or None."""
        e = self.cfg.expression_dim
        expr_n = (inputs[:, :e] - self.expr_mean) / self.expr_std * self.expr_used
        return expr_n, (inputs[:, e:] if self.cfg.torso_dims else None)

    def within_training_range(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per-frame inputs (R, E+T) with each expression dimension clamped into the training range
        (``expr_lo``, ``expr_hi``), the torso shift as it is: what a receiver renders."""
        e = self.cfg.expression_dim
        expr = torch.maximum(torch.minimum(inputs[:, :e], self.expr_hi), self.expr_lo)
        return torch.cat([expr, inputs[:, e:]], 1)

    def grid_decay(self) -> torch.Tensor:
        """Zip-NeRF's normalised weight decay of both head fields' hash tables: the sum over levels of each
        level's mean squared feature → scalar. It pulls entries that few training rays reach (and hash
        collisions' noise) toward zero instead of leaving them at whatever fitted the training frames."""
        per_field = [f.grid.table.square().mean(dim=(1, 2)).sum() for f in (self.coarse, self.fine)]
        return torch.stack(per_field).sum()

    def blend_roughness(self) -> torch.Tensor:
        """Mean squared difference between neighbouring vertices of the head fields' expression blend shapes
        (each grid B (side³,C,F) along its three axes), summed over the fields that have them → scalar: how
        much per-cell detail a held-out code, mixing the grids as no training code did, can bring out
        (``--blend-smoothness``; docs/nerf.md "The mosaic is the frame renderer's")."""
        total = self.head_lo.new_zeros(())
        for f in (self.coarse, self.fine):
            if f.blend_dim:
                side = f.cfg.blend_res + 1
                total = total + grid_roughness(f.blend.view(side, side, side, -1))  # (s,s,s,C·F)
        return total

    @property
    def scale(self) -> torch.Tensor:
        """Length of the box's longest side: distances are measured in these units."""
        return (self.head_hi - self.head_lo).max()

    def set_normalisation(
        self,
        expression: torch.Tensor,
        pose: torch.Tensor,
        expression_scale: str = "dim",
        range_quantile: float = EXPRESSION_RANGE_QUANTILE,
    ) -> None:
        """Mean/std of the training inputs (N,E+T) (expression part) and poses (N,12), per dimension; with
        ``expression_scale="global"`` every expression dimension is divided by the largest per-dimension std
        instead, so the PCA's minor components (std below 5e-4 on the shared clips, the major ones 1e-2 to
        5e-2) stay as small as they are rather than being blown up to the major ones' spread. The rendered
        expression range is the ``range_quantile`` … 1 − ``range_quantile`` quantiles per dimension, and so is
        the torso shift's that the torso field's MLPs take, if they take it."""
        q = torch.tensor(
            [range_quantile, 1 - range_quantile], dtype=expression.dtype, device=expression.device
        )
        e = self.cfg.expression_dim
        lo, hi = torch.quantile(expression, q, dim=0)  # (E+T,), (E+T,)
        self.expr_lo.copy_(lo[:e])
        self.expr_hi.copy_(hi[:e])
        if self.cfg.torso.shift_inputs:
            self.torso.set_shift_range(lo[e:], hi[e:])
        expression = expression[:, :e]
        self.expr_mean.copy_(expression.mean(0))
        std = expression.std(0)
        if expression_scale == "global":
            std = std.max().expand_as(std)
        elif expression_scale != "dim":
            raise ValueError(f"expression_scale must be 'dim' or 'global', not {expression_scale!r}")
        self.expr_std.copy_(std.clamp(min=1e-3))
        self.pose_mean.copy_(pose.mean(0))
        self.pose_std.copy_(pose.std(0).clamp(min=1e-3))

    def _head_pass(
        self,
        head: HeadField,
        edges: torch.Tensor,
        origin: torch.Tensor,
        direction: torch.Tensor,
        code: torch.Tensor,
        cons: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Evaluate ``head`` in bins ``edges`` (R,S+1) along canonical rays (R,3) with codes (R,C) or (1,C)
        and consistency codes (R,K) or (1,K) → weights (R,S), rgb (R,3), alpha (R,)."""
        n_rays, n_s = edges.shape[0], edges.shape[1] - 1
        t_mid = 0.5 * (edges[:, 1:] + edges[:, :-1])  # (R,S)
        delta = (edges[:, 1:] - edges[:, :-1]) / self.scale  # (R,S)
        pts = origin[:, None] + direction[:, None] * t_mid[..., None]  # (R,S,3)
        x = ((pts - self.head_lo) / (self.head_hi - self.head_lo)).clamp(0, 1)  # (R,S,3)
        keep = self.occupancy.query(x)  # (R,S)
        ray_idx, s_idx = keep.nonzero(as_tuple=True)
        sigma = torch.zeros(n_rays, n_s, device=x.device, dtype=x.dtype)
        rgb = torch.zeros(n_rays, n_s, 3, device=x.device, dtype=x.dtype)
        if ray_idx.numel():
            view = torch.nn.functional.normalize(direction, dim=-1)
            s, c = head(x[ray_idx, s_idx], rows(code, ray_idx), view[ray_idx], rows(cons, ray_idx))
            sigma = sigma.index_put((ray_idx, s_idx), s)
            rgb = rgb.index_put((ray_idx, s_idx), c)
        weights = render_weights(sigma, delta)
        color, alpha = accumulate(weights, rgb)
        return weights, color, alpha

    def render_rays(
        self,
        dirs: torch.Tensor,
        uv: torch.Tensor,
        expression: torch.Tensor,
        pose: torch.Tensor,
        background: torch.Tensor,
        train: bool = False,
        samples: tuple[int, int] | None = None,
        frame_code: torch.Tensor | None = None,
        distortion_loss: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Render rays: camera directions (R,3), image coords uv (R,2), raw inputs (R,E+T) (expression, then
        the torso shift if ``cfg.torso_dims``) and pose (R,12) (or (1,E+T), (1,12) shared by all rays: one
        frame), background colour (R,3) → ``rgb`` (R,3) fine
        composite, ``rgb_coarse``, ``head_alpha``, ``torso_alpha`` (R,) (and ``head_alpha_coarse``), and
        outside training ``head_depth`` (R,): the fine pass's expected depth (camera z; 0 without head).
        ``samples`` = (coarse, fine) per ray overrides the config (fewer = faster renders).
        ``frame_code`` (R,K): per-ray offsets of the consistency code, the training frames' own latent codes
        (training only: the receiver has none, i.e. zero). ``distortion_loss`` (with ``train``) adds
        ``distortion`` (), both head passes' mip-NeRF 360 distortion, mean over the rays.
        """
        n_coarse, n_fine = samples or (self.cfg.n_coarse, self.cfg.n_fine)
        n = dirs.shape[0]
        dev = dirs.device
        expr_n, shift = self.split_input(expression)
        pose_n = (pose - self.pose_mean) / self.pose_std
        cons = self.consistency.view(1, -1)  # (1,K), shared by every ray
        if frame_code is not None:
            cons = cons + frame_code  # (R,K)
        torso_rgb, torso_alpha = self.torso(uv, pose_n, cons, shift)

        origin, direction = to_canonical(dirs, pose)
        t_near, t_far, hit = intersect_box(origin, direction, self.head_lo, self.head_hi)
        out = {
            "head_rgb": torch.zeros(n, 3, device=dev),
            "head_alpha": torch.zeros(n, device=dev),
            "head_depth": torch.zeros(n, device=dev),
            "head_rgb_coarse": torch.zeros(n, 3, device=dev),
            "head_alpha_coarse": torch.zeros(n, device=dev),
        }
        idx = hit.nonzero(as_tuple=True)[0]
        if idx.numel():
            o, d = origin[idx], direction[idx]
            c, e = rows(cons, idx), rows(expr_n, idx)  # (1,K) or (R',K), (1,E) or (R',E)
            code_c, code_f = self.coarse.expression_code(e), self.fine.expression_code(e)
            edges = stratified(t_near[idx], t_far[idx], n_coarse, jitter=train)
            w_c, rgb_c, a_c = self._head_pass(self.coarse, edges, o, d, code_c, c)
            out["head_rgb_coarse"] = out["head_rgb_coarse"].index_put((idx,), rgb_c)
            out["head_alpha_coarse"] = out["head_alpha_coarse"].index_put((idx,), a_c)
            # fine pass only where the coarse pass saw something (always during training: autograd needs it)
            sel = torch.arange(idx.numel(), device=dev) if train else (a_c > 1e-3).nonzero(as_tuple=True)[0]
            if sel.numel():
                edges_f = importance(edges[sel], w_c[sel], n_fine, jitter=train)
                code_sel, cons_sel = rows(code_f, sel), rows(c, sel)
                w_f, rgb_f, a_f = self._head_pass(self.fine, edges_f, o[sel], d[sel], code_sel, cons_sel)
                out["head_rgb"] = out["head_rgb"].index_put((idx[sel],), rgb_f)
                out["head_alpha"] = out["head_alpha"].index_put((idx[sel],), a_f)
                if not train:  # expected depth along the ray (camera z: directions have z = 1)
                    mid = 0.5 * (edges_f[:, 1:] + edges_f[:, :-1])  # (R'',S)
                    depth = (w_f * mid).sum(1) / w_f.sum(1).clamp(min=1e-8)
                    out["head_depth"] = out["head_depth"].index_put((idx[sel],), depth)
                if train and distortion_loss:  # distances in head-box units
                    unit = 1.0 / self.scale
                    dist = distortion(w_c, edges * unit).sum() + distortion(w_f, edges_f * unit).sum()
                    out["distortion"] = dist / n
        out["rgb"] = composite(out["head_rgb"], out["head_alpha"], torso_rgb, torso_alpha, background)
        out["rgb_coarse"] = composite(
            out["head_rgb_coarse"], out["head_alpha_coarse"], torso_rgb, torso_alpha, background
        )
        out["torso_alpha"] = torso_alpha
        return out

    @torch.no_grad()
    def update_occupancy(self, expressions: torch.Tensor, decay: float = 0.95) -> None:
        """Re-estimate the occupancy grid from the fine density under random training inputs (N,E+T)."""
        x = self.occupancy.cell_points(jitter=True)  # (C,3)
        prior = self.occupancy.prior
        cells = None if prior is None else prior.reshape(-1).nonzero(as_tuple=True)[0]  # only these can hold
        xs = x if cells is None else x[cells]
        pick = torch.randint(0, expressions.shape[0], (xs.shape[0],), device=x.device)
        # each frame's code once (N,code_dim), then one row per cell: gathering the (N,E+T) inputs per cell
        # cost as much as the densities themselves
        codes = self.fine.expression_code(self.split_input(expressions)[0])[pick]  # (C',code_dim)
        sigma = torch.zeros(x.shape[0], device=x.device)
        sigma_xs = torch.cat(
            [
                self.fine.density(xs[i : i + 65536], codes[i : i + 65536])[0]
                for i in range(0, xs.shape[0], 65536)
            ]
            or [sigma[:0]]
        )
        if cells is None:
            sigma = sigma_xs
        else:
            sigma[cells] = sigma_xs
        step = 3**0.5 / self.cfg.n_coarse
        threshold = -torch.log(torch.tensor(1 - self.cfg.occupancy_alpha)).item() / step
        self.occupancy.update(sigma, threshold, decay)
