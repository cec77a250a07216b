"""A wink kept through the quantizer (encoder only; the bitstream is the same).

At 1-2 kbps the codec's steps are coarse on the minor expression components, where the difference between
the two eyes lives (:mod:`nerfvc.face.eyes`), and plain rounding decodes a wink as about half of one
(``benchmarks/results/wink.md``). For a frame whose code winks, :func:`keep_wink` moves the quantization
indices one step at a time, each time the single ±1 move on an expression dimension that brings the
decoder's two eye openings closest to the code's own (matching their difference alone left the open eye
half shut on may), until they are within :data:`WINK_TOLERANCE` together (or no move helps). The decoder
reconstructs exactly what the encoder computed; frames that do not wink keep their indices, so their
packets are unchanged.
"""

from __future__ import annotations

import numpy as np

from nerfvc.codec.coder import FrameModel, reconstruct
from nerfvc.codec.tables import POSE_DIM, CodecTables
from nerfvc.face.eyes import EyeApertures

WINK_TOLERANCE = 0.1  # mean apertures, both eyes' errors summed: close enough to the code's openings
WINK_MAX_MOVES = 32  # index moves per frame at most


def keep_wink(
    eyes: EyeApertures,
    tables: CodecTables,
    model: FrameModel,
    hist: list[np.ndarray] | None,
    step_index: int,
    rule: str,
    code: np.ndarray,
    q: np.ndarray,
) -> np.ndarray:
    """Indices ``q (K,)`` of a frame whose ``code (D,)`` (the expression first) winks, moved so that the
    decoder's output (``model`` after ``hist`` at ``step_index``, reconstruction ``rule``) opens each eye
    as the code does; ``q`` itself when the code does not wink."""
    e = eyes.expression_dim
    expression = np.asarray(code, np.float64)[:e]
    if not eyes.winks(expression):
        return q
    target = eyes.openings(expression)  # (2,)
    span = slice(POSE_DIM, POSE_DIM + e)

    def gap(qs: np.ndarray) -> np.ndarray:  # (N,K) candidate indices → (N,) how far each eye is from its own
        out = reconstruct(tables, model, qs, hist, step_index, rule)  # (N,K)
        return np.abs(eyes.openings(out[:, span]) - target).sum(1)

    unit = np.eye(len(q), dtype=q.dtype)[span]  # (E,K) one step on each expression dimension
    moves = np.concatenate([unit, -unit])  # (2E,K)
    best = float(gap(q[None])[0])
    for _ in range(WINK_MAX_MOVES):
        if best <= WINK_TOLERANCE:
            break
        candidates = q[None] + moves  # (2E,K)
        gaps = gap(candidates)
        i = int(np.argmin(gaps))
        if gaps[i] >= best:
            break
        q, best = candidates[i], float(gaps[i])
    return q
