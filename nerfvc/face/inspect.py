"""``nerfvc inspect``: a contact sheet PNG of a DATASET for a human to check.

Rows: sampled frames. Columns: frame + tracked landmarks (green); posed model reprojection (red) + projected
``head_bounds`` box (yellow); mask overlay (head red, torso blue); then the background with the reprojection.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np

from nerfvc.camera import Camera
from nerfvc.datasetdir import (
    BACKGROUND_FILE,
    COVERAGE_FILE,
    dataset_split,
    frame_path,
    mask_path,
    read_features,
    read_manifest,
)
from nerfvc.face.coverage import summary_lines
from nerfvc.face.model import FaceModel, box_corners
from nerfvc.face.prepare import read_png, write_png
from nerfvc.fsutil import read_json

_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    img[: th + 10, : tw + 10] = (img[: th + 10, : tw + 10] * 0.3).astype(np.uint8)  # dark box behind the text
    cv2.putText(img, text, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _dots(img: np.ndarray, uv: np.ndarray, color: tuple, s: float) -> np.ndarray:
    for x, y in uv * s:
        cv2.circle(img, (round(x), round(y)), 1, color, -1, cv2.LINE_AA)
    return img


def contact_sheet(dataset: str | Path, out: str | Path, rows: int = 5, tile: int = 256) -> Path:
    """Write the contact sheet of ``dataset`` to ``out`` (PNG); returns ``out``."""
    d = Path(dataset)
    manifest = read_manifest(d)
    cam = Camera.from_dict(manifest["camera"])
    model = FaceModel.load(d)
    feats = read_features(d, manifest)
    n = manifest["num_frames"]
    s = tile / max(cam.width, cam.height)
    th, tw = round(cam.height * s), round(cam.width * s)
    uv_all = model.project(feats["expression"], feats["pose"], cam)  # (N, 478, 2)
    err = np.linalg.norm(uv_all - feats["landmarks"][..., :2], axis=-1).mean(-1)  # (N,)
    sheet_rows = []
    for i in np.linspace(0, n - 1, rows).round().astype(int):
        frame = cv2.resize(read_png(frame_path(d, i)), (tw, th), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(read_png(mask_path(d, i), gray=True), (tw, th), interpolation=cv2.INTER_NEAREST)
        a = _dots(frame.copy(), feats["landmarks"][i, :, :2], (0, 255, 0), s)
        valid = bool(feats["valid"][i]) if "valid" in feats else True
        a = _label(a, f"#{i} t={feats['timestamps'][i]:.2f}s" + ("" if valid else " INTERP"))
        b = _dots(frame.copy(), uv_all[i], (255, 0, 0), s)
        r = feats["pose"][i, :9].reshape(3, 3).astype(np.float64)
        corners = cam.project(box_corners(model.head_bounds) @ r.T + feats["pose"][i, 9:]) * s
        for e0, e1 in _EDGES:
            p0, p1 = corners[e0], corners[e1]
            cv2.line(
                b, (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1])), (255, 220, 0), 1, cv2.LINE_AA
            )
        b = _label(b, f"model reproj {err[i]:.2f}px + head box")
        over = frame.copy().astype(np.float32)
        color = np.array([[0, 0, 0], [40, 90, 255], [255, 40, 40]], np.float32)[mask]
        over = np.where(mask[..., None] > 0, 0.5 * over + 0.5 * color, 0.35 * over).astype(np.uint8)
        c = _label(over, "mask: head red, torso blue")
        sheet_rows.append(np.concatenate([a, b, c], axis=1))
    bg = cv2.resize(read_png(d / BACKGROUND_FILE), (tw, th), interpolation=cv2.INTER_AREA)
    bg = _label(bg, "background")
    train, test = dataset_split(manifest)
    lines = [
        f"{Path(manifest['source']).name}",
        f"{n} frames {cam.width}x{cam.height} @ {manifest['fps']:.2f} fps, valid {int(feats['valid'].sum())}",
        f"split train {list(train)} test {list(test)}",
        f"expr dims {model.expr_dims}, explained var {model.explained_variance_ratio * 100:.3f}%",
        f"reproj error mean {err.mean():.3f}px max {err.max():.3f}px",
        f"head box coverage of head masks {model.info.get('head_bounds_coverage', float('nan')) * 100:.1f}%",
        f"camera f={cam.fx:.1f}px, mean depth {feats['pose'][:, 11].mean():.3f} m",
    ]
    if (d / COVERAGE_FILE).is_file():  # datasets prepared before coverage was measured have none
        lines += summary_lines(read_json(d / COVERAGE_FILE))
    lines = [part for line in lines for part in textwrap.wrap(line, width=max(20, tw * 2 // 10))]
    height = max(th, 30 + 22 * len(lines))
    meta = np.full((height, tw * 2, 3), 30, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(
            meta, line, (10, 30 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA
        )
    bg = np.pad(bg, ((0, height - th), (0, 0), (0, 0)))
    sheet_rows.append(np.concatenate([bg, meta], axis=1))
    sheet = np.concatenate(sheet_rows, axis=0)
    out = Path(out)
    write_png(out, sheet)
    return out
