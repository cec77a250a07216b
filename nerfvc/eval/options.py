"""The options of ``nerfvc eval`` / ``nerfvc eval-baselines`` and ``nerfvc batch``'s eval step, with their
defaults written once (the CLI takes its defaults from here; light to import)."""

from __future__ import annotations

from dataclasses import dataclass

from nerfvc.eval.baselines import CODECS


@dataclass
class EvalOptions:
    """What ``nerfvc eval MODEL VIDEO`` (``model`` set) or ``nerfvc eval-baselines VIDEO`` runs; the CLI's
    defaults are these."""

    video: str
    out: str
    model: str | None = None
    sizes: str = "256,512"  # sizes scored with every metric
    floor_sizes: str = ""  # sizes where only codec floors are measured
    codecs: str = ",".join(CODECS)
    points: int = 0  # use only the first N points of each sweep (0: all)
    no_face: bool = False  # skip the face metrics
    dists_frames: int | None = None  # DISTS on this many frames per point (None: DISTS_FRAMES; 0: none)
    kbps: str = "0.8,1.5,3"  # nerfvc target rates
    max_frames: int = 0  # score only the first N test frames (0: all)
    frames_per_packet: int = 1  # frames sharing one packet's framing (1: as in a live call)
    keep_videos: bool = False  # keep every scored sequence as a lossless video (REPORT/videos/)
