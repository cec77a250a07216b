"""The guard in ``nerfvc eval``: a rate point's decoded features → the frames the receiver shows with the
guard and fallback (``nerfvc+guard``), the fallback bits and the share of frames in fallback."""

from __future__ import annotations

import numpy as np

from nerfvc.codec.framing import TYPE_FALLBACK, build_packet
from nerfvc.guard.fallback import Compositor, GuardConfig, SenderGuard

_ANY_FP = bytes(8)  # packet sizes do not depend on the fingerprint


def guarded_frames(
    renderer,
    camera: np.ndarray,
    expression: np.ndarray,
    pose: np.ndarray,
    rendered: np.ndarray,
    fps: float,
    config: GuardConfig | None = None,
) -> tuple[np.ndarray, dict]:
    """``camera`` (N,H,W,3) the frames the sender sees (at the scored size), ``expression``/``pose`` the
    features the receiver decoded, ``rendered`` (N,H,W,3) the receiver's renders of them → the frames shown
    with the guard, and ``{"fallback_bytes", "fallback_kbps", "fallback_share", "pictures"}``."""
    cfg = config or GuardConfig()
    guard, comp = SenderGuard(cfg, fps), Compositor()
    s = cfg.check_size
    out = np.empty_like(rendered)
    nbytes = pictures = 0
    for i in range(len(rendered)):
        tiny = renderer.render(expression[i], pose[i], s, s)
        packets, _ = guard.step(i, camera[i], tiny)
        for p in packets:
            nbytes += len(build_packet(_ANY_FP, TYPE_FALLBACK, p.index, p.picture, p.alpha))
            pictures += bool(p.picture)
        comp.add(packets)
        out[i] = comp.compose(i, rendered[i])
    n = max(len(rendered), 1)
    info = {
        "fallback_bytes": nbytes,
        "fallback_kbps": nbytes * 8 / (n / fps) / 1000,
        "fallback_share": comp.frames_in_fallback / n,
        "pictures": pictures,
    }
    return out, info
