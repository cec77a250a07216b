"""The options of ``nerfvc eval`` / ``nerfvc eval-baselines`` and ``nerfvc batch``'s eval step, with their
defaults written once (the CLI takes its defaults from here; light to import)."""

from __future__ import annotations

from dataclasses import dataclass

from nerfvc.eval.baselines import CODECS
from nerfvc.pipeline.pose_refine import PoseRefineConfig

# DISTS costs ~1 s per 256² frame, ~5 s per 512² frame on one CPU core: score this many frames per sequence.
DISTS_FRAMES = 8


@dataclass
class EvalOptions:
    """What ``nerfvc eval MODEL VIDEO`` (``model`` set) or ``nerfvc eval-baselines VIDEO`` runs; the CLI's
    defaults are these."""

    video: str
    out: str
    model: str | None = None
    sizes: str = "256,512"  # sizes scored with every metric (comma-separated)
    floor_sizes: str = ""  # sizes where only codec floors are measured, e.g. 128,1024
    codecs: str = ",".join(CODECS)  # comma-separated subset of the classic codecs
    points: int = 0  # use only the first N points of each sweep (0: all)
    no_face: bool = False  # skip the face metrics (CSIM, PRMSE, AUCON, LMD)
    # DISTS on this many evenly spaced frames per rate point (0: none)
    dists_frames: int | None = DISTS_FRAMES
    kbps: str = "0.8,1.5,3"  # nerfvc target rates (comma-separated)
    max_frames: int = 0  # score only the first N test frames (0: all)
    # frames sharing one packet's framing (1: as in a live call; `nerfvc encode` uses 4 for files)
    frames_per_packet: int = 1
    # L-BFGS iterations of the sender's expression refinement per frame (0: the tracker's fits sent as they
    # are; nerfvc.pipeline.refine)
    refine: int = 0
    # Levenberg-Marquardt steps of the sender's head-pose refinement per frame (0: the tracker's poses sent as
    # they are; nerfvc.pipeline.pose_refine.PoseRefiner, as `nerfvc encode VIDEO` does by default)
    refine_pose: int = PoseRefineConfig.iterations
    # how the sender picks the frame step at each rate: "render" (it codes, decodes and renders each one the
    # rate allows and keeps the closest to its frames, as `nerfvc encode VIDEO` does) or "rule" (the step
    # size alone, as for a features file); docs/bitstream.md "Frame step chosen by rendering"
    frame_step_by: str = "render"
    keep_videos: bool = False  # keep every scored sequence as a lossless video (REPORT/videos/)
    # render the NeRF alone, without the model's reference frames' texture (the ablation)
    no_references: bool = False
