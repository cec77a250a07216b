"""``nerfvc prepare``: video → DATASET directory (docs/architecture.md), resumable.

Pass 1 decodes, crops/resizes, tracks the face mesh and the person segmentation per frame, and writes
``frames/%06d.png`` plus a per-frame work file ``.work/%06d.npz`` (landmarks, face count, timestamp, person
probability), all atomically: a rerun skips every frame whose files exist. Pass 2 interpolates lost frames,
builds the morphable model, fits features, writes masks, the background and the model; ``manifest.json`` gets
``complete: true`` last, then ``.work`` is removed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from nerfvc import __version__
from nerfvc.camera import Camera
from nerfvc.datasetdir import (
    BACKGROUND_FILE,
    COVERAGE_FILE,
    DATASET_FORMAT,
    DATASET_VERSION,
    FRAMES_DIR,
    MANIFEST,
    MASKS_DIR,
    dataset_split,
    features_path,
    frame_path,
    mask_path,
    read_features,
    split_ranges,
)
from nerfvc.errors import FaceError, InputError, NerfvcError
from nerfvc.face.coverage import coverage as enrollment_coverage
from nerfvc.face.coverage import summary_lines
from nerfvc.face.mesh import NUM_LANDMARKS, FaceMesh, PersonSegmenter
from nerfvc.face.model import DEFAULT_FOV_DEG, FaceModel, box_corners
from nerfvc.face.segment import HEAD, estimate_background, label_mask
from nerfvc.face.smoothing import SmoothingParams, smooth_sequence
from nerfvc.face.torso import CHIN, TORSO_DIMS, TORSO_FILE, build_torso_tracker, save_no_torso
from nerfvc.features import save_features
from nerfvc.fsutil import atomic_path, read_json, sha256_file, write_bytes_atomic, write_json_atomic
from nerfvc.io.video import VideoInfo, probe, read_frames

log = logging.getLogger(__name__)

MAX_LOST_FRACTION = 0.5  # fail when the face is missing in more than this fraction of frames
MAX_TWO_FACE_FRAMES = 3  # fail when a second face is seen in this many frames


@dataclass(frozen=True)
class PrepareParams:
    """Everything that determines the dataset's content (a resume must use the same); the defaults are
    :func:`prepare`'s and ``nerfvc prepare``'s."""

    source: str
    start: float = 0.0  # start time in seconds
    max_frames: int | None = None  # use at most N frames
    size: int = 512  # longer side of the dataset frames
    crop: str = "auto"  # auto: a square crop around the face; none: the whole frame
    expr_dims: int = 79  # expression PCA dimensions
    fov_deg: float = DEFAULT_FOV_DEG  # nominal camera FOV in degrees
    # one-euro filter the features (nerfvc.face.smoothing defaults) as the sender's tracker will then do too
    smoothing: bool = False


def write_png(path: Path, rgb_or_gray: np.ndarray) -> None:
    """Atomic lossless PNG of an RGB ``(H, W, 3)`` or single-channel ``(H, W)`` uint8 image."""
    img = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    write_bytes_atomic(path, buf.tobytes())


def read_png(path: Path, gray: bool = False) -> np.ndarray:
    """Read a PNG as RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8; :class:`InputError` if missing/unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: missing or not an image")
    if gray:
        return img if img.ndim == 2 else img[..., 0]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def choose_crop(
    video: str, width: int, height: int, crop: str, start: float, max_frames: int | None
) -> tuple:
    """Source rectangle ``(x0, y0, w, h)``: a square around the face (``auto``, non-square input) or all."""
    if crop == "none" or width == height:
        return (0, 0, width, height)
    side = min(width, height)
    mesh = FaceMesh(max_num_faces=1, static=True)
    centres = []
    try:
        for i, (frame, _) in enumerate(read_frames(video, start=start, max_frames=max_frames)):
            if i % 10:
                continue
            faces = mesh.detect(frame)
            if faces:
                lo, hi = faces[0][:, :2].min(0), faces[0][:, :2].max(0)
                centres.append(0.5 * (lo + hi) - [0, 0.1 * (hi[1] - lo[1])])  # slightly up: hair > neck
            if len(centres) >= 30:
                break
    finally:
        mesh.close()
    if not centres:
        raise FaceError(f"{video}: no face found (needed to choose the crop)")
    cx, cy = np.median(np.array(centres), axis=0)
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return (x0, y0, side, side)


def _out_size(rect: tuple, size: int) -> tuple[int, int]:
    _, _, w, h = rect
    s = size / max(w, h)
    return max(2, round(w * s / 2) * 2), max(2, round(h * s / 2) * 2)


def _interpolate(landmarks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid frames ``(N, 478, 3)`` linearly in frame index (nearest valid frame at the ends)."""
    idx, missing = np.flatnonzero(valid), np.flatnonzero(~valid)
    out = landmarks.reshape(len(landmarks), -1).copy()  # (N, 1434)
    for c in range(out.shape[1]):
        out[missing, c] = np.interp(missing, idx, out[idx, c])
    return out.reshape(landmarks.shape)


def _tools() -> dict:
    import av
    import mediapipe

    return {
        "nerfvc": __version__,
        "mediapipe": mediapipe.__version__,
        "av": av.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }


def prepare(
    video: str | Path,
    out: str | Path,
    *,
    max_frames: int | None = PrepareParams.max_frames,
    start: float = PrepareParams.start,
    size: int = PrepareParams.size,
    crop: str = PrepareParams.crop,
    expr_dims: int = PrepareParams.expr_dims,
    fov_deg: float = PrepareParams.fov_deg,
    smoothing: bool = PrepareParams.smoothing,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Turn ``video`` into the DATASET directory ``out`` (see docs/architecture.md); returns ``out``."""
    out = Path(out)
    if crop not in ("auto", "none"):
        raise InputError(f"--crop must be 'auto' or 'none', got {crop!r}")
    if size < 16 or expr_dims < 1 or (max_frames is not None and max_frames < 2):
        raise InputError("need --size >= 16, --expr-dims >= 1 and --max-frames >= 2")
    info = probe(video)
    params = PrepareParams(
        str(Path(video).resolve()), float(start), max_frames, int(size), crop, expr_dims, fov_deg, smoothing
    )
    source_id = {"size": Path(video).stat().st_size, "sha256": sha256_file(video)}
    manifest_path = out / MANIFEST
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if manifest_path.exists():
        old = read_json(manifest_path)
        # parameters added later take their defaults in datasets made before them
        recorded_params = {**asdict(PrepareParams(params.source)), **old.get("params", {})}
        if recorded_params != asdict(params) or old.get("format") != DATASET_FORMAT:
            raise InputError(
                f"{out}: holds a dataset made with other parameters (use --overwrite or a new -o)"
            )
        recorded = old.get("source_id")  # absent in datasets made before it was recorded
        if recorded != source_id and (recorded is not None or not old.get("complete")):
            raise InputError(
                f"{out}: was started from a different source video than {video} (size or SHA-256 differ); "
                "use --overwrite or a new -o"
            )
        if old.get("complete"):
            if not (out / TORSO_FILE).exists():  # made before torso motion existed: add it
                measure_torso(out, progress)
            log.warning("%s: already complete", out)
            return out
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not a nerfvc dataset (use --overwrite or a new -o)")

    # Crop and camera are fixed once, on the first run, and reused on resume.
    if manifest_path.exists():
        old = read_json(manifest_path)
        rect, camera = tuple(old["crop"]), Camera.from_dict(old["camera"])
    else:
        rect = choose_crop(str(video), info.width, info.height, crop, start, max_frames)
        w, h = _out_size(rect, size)
        camera = Camera.from_fov(w, h, fov_deg)
    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "complete": False,
        "source": str(video),
        "source_id": source_id,
        "params": asdict(params),
        "crop": list(rect),
        "camera": camera.to_dict(),
        "width": camera.width,
        "height": camera.height,
        "fps": info.fps,
        "tools": _tools(),
    }
    write_json_atomic(manifest_path, manifest)
    try:
        _build(video, out, manifest, rect, camera, info, params, progress)
    except NerfvcError:
        # bad input (no face, two faces, a truncated video): a rerun cannot succeed, so leave nothing behind
        # (an interruption, in contrast, keeps the frames done for a resume)
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _build(
    video: str | Path,
    out: Path,
    manifest: dict,
    rect: tuple,
    camera: Camera,
    info: VideoInfo,
    params: PrepareParams,
    progress: bool,
) -> None:
    """Passes 1 and 2 of :func:`prepare` into ``out``, whose (incomplete) ``manifest`` is written."""
    start, max_frames = params.start, params.max_frames
    work = out / ".work"
    manifest_path = out / MANIFEST
    (out / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    (out / MASKS_DIR).mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)

    # ---------------------------------------------------------------- pass 1: decode, track, segment
    total = info.num_frames
    if start > 0 and info.fps > 0:
        total = max(0, round((info.duration - start) * info.fps))
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    mesh, seg = FaceMesh(max_num_faces=2), PersonSegmenter()
    x0, y0, rw, rh = rect
    n = 0
    two_face = []
    try:
        bar = tqdm(total=total or None, desc="prepare: track", unit="fr", disable=not progress, leave=False)
        for i, (frame, t) in enumerate(read_frames(video, start=start, max_frames=max_frames)):
            n = i + 1
            bar.update(1)
            fpath, wpath = frame_path(out, i), work / f"{i:06d}.npz"
            if fpath.exists() and wpath.exists():
                with np.load(wpath) as z:
                    if int(z["faces"]) > 1:
                        two_face.append(i)
                continue
            img = frame[y0 : y0 + rh, x0 : x0 + rw]
            if img.shape[:2] != (camera.height, camera.width):
                interp = cv2.INTER_AREA if rw > camera.width else cv2.INTER_CUBIC
                img = cv2.resize(img, (camera.width, camera.height), interpolation=interp)
            faces = mesh.detect(img)
            if len(faces) > 1:
                two_face.append(i)
                if len(two_face) >= MAX_TWO_FACE_FRAMES:
                    raise FaceError(
                        f"{video}: two faces visible (frames {', '.join(map(str, two_face))}); "
                        "nerfvc needs exactly one person in the video"
                    )
            lm = faces[0] if len(faces) == 1 else np.zeros((NUM_LANDMARKS, 3), np.float32)
            person = np.round(seg.person(img) * 255).astype(np.uint8)  # (H, W)
            write_png(fpath, img)
            with (
                atomic_path(wpath) as tmp,
                open(tmp, "wb") as f,
            ):
                np.savez_compressed(f, landmarks=lm, faces=len(faces), t=t, person=person)
        bar.close()
    finally:
        mesh.close()
        seg.close()
    if n < 2:
        raise InputError(f"{video}: fewer than 2 frames to prepare (start={start})")
    if len(two_face) >= MAX_TWO_FACE_FRAMES:
        raise FaceError(
            f"{video}: two faces visible in {len(two_face)} frames; nerfvc needs exactly one person"
        )

    # ------------------------------------------------------- pass 2: model, features, masks, background
    landmarks = np.zeros((n, NUM_LANDMARKS, 3), np.float32)
    face_counts = np.zeros(n, np.int64)
    times = np.zeros(n, np.float64)
    for i in range(n):
        with np.load(work / f"{i:06d}.npz") as z:
            landmarks[i], face_counts[i], times[i] = z["landmarks"], int(z["faces"]), float(z["t"])
    valid = face_counts == 1
    if not valid.any():
        raise FaceError(f"{video}: no face found in any of {n} frames")
    if (~valid).mean() > MAX_LOST_FRACTION:
        raise FaceError(
            f"{video}: face found in only {valid.sum()} of {n} frames; need most frames with a face"
        )
    if not valid.all():
        log.warning("face lost in %d of %d frames: interpolated (valid=False)", (~valid).sum(), n)
        landmarks = _interpolate(landmarks, valid)

    split = split_ranges(n)
    n_train = split["train"][1]
    train_valid = np.flatnonzero(valid[:n_train])
    build_frames = train_valid if len(train_valid) >= 2 else valid
    model = FaceModel.build(landmarks[build_frames], camera, params.expr_dims)
    expression, pose = model.fit(landmarks, camera)
    if params.smoothing:
        model.smoothing = SmoothingParams()
        expression, pose = smooth_sequence(expression, pose, times, model.smoothing)

    sample = set(np.linspace(0, n - 1, min(n, 120)).round().astype(int).tolist())
    bg_frames, bg_masks, cover = [], [], []
    model.head_bounds = model.default_head_bounds()
    for i in tqdm(range(n), desc="prepare: masks", unit="fr", disable=not progress, leave=False):
        with np.load(work / f"{i:06d}.npz") as z:
            person = z["person"].astype(np.float32) / 255
        m = label_mask(person, landmarks[i])
        write_png(mask_path(out, i), m)
        if i in sample:
            bg_frames.append(read_png(frame_path(out, i)))
            bg_masks.append(m)
            cover.append((i, m == HEAD))
    # head_bounds: grow the anthropometric box until its projection covers the head masks (see docs/face.md)
    coverage = head_box_coverage(model, model.head_bounds, expression, pose, camera, cover)
    grow = 0
    while coverage < 0.995 and grow < 6:
        c = model.head_bounds.mean(0)
        model.head_bounds = c + (model.head_bounds - c) * np.array([1.1, 1.1, 1.0])
        coverage = head_box_coverage(model, model.head_bounds, expression, pose, camera, cover)
        grow += 1
    model.info = {"head_bounds_coverage": coverage, "fov_deg": params.fov_deg, "num_frames": len(train_valid)}
    background, _ = estimate_background(bg_frames, bg_masks)
    write_png(out / BACKGROUND_FILE, background)
    model.save(out)
    save_features(
        features_path(out),
        expression=expression,
        pose=pose,
        landmarks=landmarks.astype(np.float32),
        valid=valid,
        timestamps=times,
    )
    measure_torso(out, progress, n_train)
    cov = enrollment_coverage(landmarks, pose, n_train, valid)
    write_json_atomic(out / COVERAGE_FILE, cov)
    for line in summary_lines(cov):
        (log.warning if line.startswith("missing") else log.info)("enrollment %s", line)
    manifest.update(
        num_frames=n,
        split=split,
        valid_frames=int(valid.sum()),
        complete=True,
    )
    write_json_atomic(manifest_path, manifest)
    shutil.rmtree(work, ignore_errors=True)


def measure_torso(out: Path, progress: bool = True, n_train: int | None = None, halves: bool = True) -> None:
    """Build the person's torso tracker from the DATASET ``out``'s training frames and add every frame's torso
    shift (``torso`` (N,4) with the band's ``halves``, else (N,2)) to its ``features.npz`` ((N,2) zeros, and
    no tracker, if the chin leaves no band)."""
    feats = read_features(out)
    n = len(feats["pose"])
    if n_train is None:
        n_train = dataset_split(read_json(out / MANIFEST))[0][1]
    valid = feats.get("valid", np.ones(n, bool)).astype(bool)
    train = np.flatnonzero(valid[:n_train])
    ref = read_png(frame_path(out, int(train[0]) if len(train) else 0))  # the reference
    chin = feats["landmarks"][train if len(train) else slice(None), CHIN, 1] / ref.shape[0]
    tracker = build_torso_tracker(ref, chin, halves)
    torso = np.zeros((n, tracker.dims if tracker else TORSO_DIMS), np.float32)  # no band: two zeros, as ever
    if tracker is None:
        save_no_torso(out)
    else:
        for i in tqdm(range(n), desc="prepare: torso", unit="fr", disable=not progress, leave=False):
            torso[i] = tracker.shift(read_png(frame_path(out, i)))
        tracker.save(out)
    save_features(features_path(out), **{**feats, "torso": torso})


def head_box_coverage(
    model: FaceModel, bounds: np.ndarray, expression, pose, camera: Camera, heads: list
) -> float:
    """Fraction of head-mask pixels inside the projected head box, over ``heads`` = [(frame, bool mask)]."""
    inside = total = 0
    corners = box_corners(bounds)  # (8, 3)
    for i, head in heads:
        r = pose[i, :9].reshape(3, 3).astype(np.float64)
        pc = corners @ r.T + pose[i, 9:]
        if (pc[:, 2] <= 1e-3).any():
            continue
        uv = camera.project(pc)
        hull = cv2.convexHull(np.round(uv * 16).astype(np.int32))
        poly = np.zeros(head.shape, np.uint8)
        cv2.fillConvexPoly(poly, hull, 1, shift=4)
        inside += int((head & poly.astype(bool)).sum())
        total += int(head.sum())
    return float(inside / total) if total else 1.0
