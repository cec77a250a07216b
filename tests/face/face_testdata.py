"""Test data helpers for the face tests (real clips, tracking)."""

from pathlib import Path

import cv2
import numpy as np

from nerfvc.face.mesh import FaceMesh
from nerfvc.io import read_frames

CLIPS = Path(__file__).parents[2] / "../shared/data/clips"
GERMAN = CLIPS / "mimictalk_german_anchor_20s.mp4"
D9 = CLIPS / "liveportrait_d9_man_glasses_room.mp4"
AOC = CLIPS / "hdtf_wda_alexandriaocasiocortez_000.mp4"


def track_clip(path: Path, n: int, size: int = 512, every: int = 1) -> tuple[list, list[list[np.ndarray]]]:
    """Frames (resized to size², center-cropped) and face-mesh detections of the first n·every frames."""
    mesh = FaceMesh(max_num_faces=2)
    frames, faces = [], []
    for i, (f, _) in enumerate(read_frames(path, max_frames=n * every)):
        if i % every:
            continue
        h, w = f.shape[:2]
        s = min(h, w)
        f = cv2.resize(f[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2], (size, size))
        frames.append(f)
        faces.append(mesh.detect(f))
    mesh.close()
    return frames, faces
