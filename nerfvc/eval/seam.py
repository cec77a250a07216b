"""Seams in a rendered frame: edges the render draws where the camera frame has none (issue 16).

The receiver draws the head with the 3D head field inside the head box and everything else that is person
with the 2D torso layer, so hair that crosses from one layer into the other (long hair below the ears is
torso by the masks' rule, docs/face.md) can be cut where the head layer's opacity ends, and a head that
leaves its box would be cut at the box's screen outline. Both show as a step between neighbouring pixels
that the camera frame does not have. :func:`edge_jumps` measures that on pixel pairs: for each pair of
4-neighbours (p, q), the render's step ``|R_p - R_q|`` beside the truth's ``|G_p - G_q|`` (mean over RGB,
8-bit levels) and the step's error ``|(R_p - R_q) - (G_p - G_q)|``. A render step above the truth's on a
set of pairs is an edge the frame does not have there (a seam, a cut-out); below it, a blurred one.

:func:`seam_pairs` picks the pair sets: ``seam`` (crossing the head layer's edge, opacity 0.5, into what
the truth labels torso), ``outline`` (the same edge into the truth's background), ``interior`` (both inside
the head layer: the render's own blur, to compare with) and ``box`` (crossing the head box's screen outline
where the head layer is drawn inside it: a head cut by its box).
"""

from __future__ import annotations

import math

import numpy as np

from nerfvc.face.segment import BACKGROUND, TORSO

PAIR_SETS = ("seam", "outline", "interior", "box")
STEPS = ("render", "truth", "error")


def _neighbours(a: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``a`` (H,W,...) → its (left, right) and (top, bottom) neighbour views."""
    return (a[:, :-1], a[:, 1:]), (a[:-1], a[1:])


def seam_pairs(
    head_alpha: np.ndarray, labels: np.ndarray, box: np.ndarray | None = None
) -> list[dict[str, np.ndarray]]:
    """The pair sets of one frame, as ``[{name: (H,W-1) bool}, {name: (H-1,W) bool}]`` for the horizontal
    and the vertical pairs. ``head_alpha`` (H,W) the render's head opacity, ``labels`` (H,W) the truth's
    labels (0 background, 1 torso, 2 head), ``box`` (H,W) bool: pixels whose rays hit the head box."""
    inside = head_alpha >= 0.5
    box = np.zeros_like(inside) if box is None else box
    out = []
    for (a0, a1), (l0, l1), (h0, h1), (b0, b1) in zip(
        *map(_neighbours, (inside, labels, head_alpha, box)), strict=True
    ):
        cross = a0 != a1
        outer = np.where(a0, l1, l0)  # the truth's label on the pair's outer pixel
        out.append(
            {
                "seam": cross & (outer == TORSO),
                "outline": cross & (outer == BACKGROUND),
                "interior": a0 & a1,
                "box": (b0 != b1) & (np.where(b0, h0, h1) >= 0.05),  # the head layer drawn at the box's edge
            }
        )
    return out


def edge_jumps(
    render: np.ndarray,
    truth: np.ndarray,
    head_alpha: np.ndarray,
    labels: np.ndarray,
    box: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """One frame's steps per pair set: ``render``, ``truth`` (H,W,3) uint8, ``head_alpha`` (H,W) float,
    ``labels`` (H,W) uint8, ``box`` (H,W) bool or None → ``{set: {"pairs", "render", "truth", "error"}}``:
    the mean steps and step error in 8-bit levels (NaN for a set without pairs)."""
    if (
        render.shape != truth.shape
        or render.shape[:2] != head_alpha.shape
        or labels.shape != head_alpha.shape
    ):
        raise ValueError(
            f"seam: shapes differ (render {render.shape}, truth {truth.shape}, alpha {head_alpha.shape}, "
            f"labels {labels.shape})"
        )
    r, g = render.astype(np.float32), truth.astype(np.float32)
    sums = {k: np.zeros(4) for k in PAIR_SETS}  # pairs, Σ |dR|, Σ |dG|, Σ |dR − dG|
    for sets, (r0, r1), (g0, g1) in zip(
        seam_pairs(head_alpha, labels, box), *map(_neighbours, (r, g)), strict=True
    ):
        dr, dg = (r1 - r0).mean(-1), (g1 - g0).mean(-1)  # (H,W-1) or (H-1,W): the step, mean over RGB
        steps = (np.abs(dr), np.abs(dg), np.abs(dr - dg))
        for name, sel in sets.items():
            sums[name] += (sel.sum(), *(t[sel].sum() for t in steps))
    return {
        k: {"pairs": int(v[0]), **{m: float(x / v[0]) if v[0] else math.nan for m, x in zip(STEPS, v[1:])}}
        for k, v in sums.items()
    }


def pooled(frames: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-frame :func:`edge_jumps` results → the same, pooled over every pair of every frame."""
    out = {}
    for k in PAIR_SETS:
        n = sum(f[k]["pairs"] for f in frames)
        tot = {m: sum(f[k][m] * f[k]["pairs"] for f in frames if f[k]["pairs"]) for m in STEPS}
        out[k] = {"pairs": n, **{m: (v / n if n else math.nan) for m, v in tot.items()}}
    return out
