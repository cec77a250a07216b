"""Torso motion: the sender's torso-shift measurement (``nerfvc.face.torso``) and its place in a dataset."""

import json

import cv2
import numpy as np
import pytest
from face_testdata import GERMAN

from nerfvc.errors import InputError
from nerfvc.face.torso import MIN_BAND, TORSO_FILE, TorsoBand, TorsoTracker, build_torso_tracker
from nerfvc.face.tracker import FaceTracker
from nerfvc.features import load_features


def _textured_frame(size: int = 320, seed: int = 0) -> np.ndarray:
    """A frame with a smooth random texture (something for phase correlation to lock onto)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    img = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("dx,dy", [(0.0, 0.0), (3.5, -2.0), (-7.25, 1.5)])
def test_tracker_measures_a_known_shift_and_survives_a_save(dx, dy, tmp_path):
    frame = _textured_frame()
    band = TorsoBand(0.7)
    tracker = TorsoTracker(band, band.extract(frame))
    got = tracker.shift(_shifted(frame, dx, dy))
    np.testing.assert_allclose(got * frame.shape[0], [dx, dy], atol=0.25)  # pixels of the 320² frame
    tracker.save(tmp_path)
    again = TorsoTracker.from_dir(tmp_path)
    np.testing.assert_array_equal(again.shift(_shifted(frame, dx, dy)), got)  # the 8-bit reference is exact


@pytest.mark.parametrize(
    "left,right", [((0.0, 0.0), (0.0, 0.0)), ((2.0, -1.5), (2.0, -1.5)), ((3.0, 2.0), (-1.0, -2.0))]
)
def test_halves_measure_how_the_band_turns_and_survive_a_save(left, right, tmp_path):
    frame = _textured_frame()
    band = TorsoBand(0.7)
    tracker = TorsoTracker(band, band.extract(frame), halves=True)
    assert tracker.dims == 4
    moved = _shifted(frame, *left)
    moved[:, 160:] = _shifted(frame, *right)[:, 160:]  # the right half of the body moves its own way
    got = tracker.shift(moved) * frame.shape[0]  # pixels of the 320² frame
    turn = (np.subtract(left, right) / 2).tolist()
    np.testing.assert_allclose(got[2:], turn, atol=0.3)
    whole = TorsoTracker(band, band.extract(frame)).shift(moved)
    np.testing.assert_array_equal(got[:2] / frame.shape[0], whole)  # the first two are the plain shift
    tracker.save(tmp_path)
    again = TorsoTracker.from_dir(tmp_path)
    assert again.halves
    np.testing.assert_array_equal(again.shift(moved) * frame.shape[0], got)


def test_halves_are_measured_on_the_raw_band_like_a_plain_correlation_of_each_half():
    """cv2.phaseCorrelate windows its inputs in place when their size needs no padding (64 rows here; 32 on
    german): the halves must not see the whole-band call's window."""
    frame = _textured_frame(seed=1)
    band = TorsoBand(0.75)
    tracker = TorsoTracker(band, band.extract(frame), halves=True)
    moved = _shifted(frame, 1.5, -0.5)
    moved[:, 160:] = _shifted(frame, -0.75, 1.0)[:, 160:]
    raw, ref = band.extract(moved), tracker.reference
    assert cv2.getOptimalDFTSize(len(raw)) == len(raw)  # the size at which the window lands in place
    h, w = ref.shape[:2]
    window = np.outer(np.hanning(h), np.hanning(w // 2))
    (lx, ly), _ = cv2.phaseCorrelate(ref[:, : w // 2].copy(), raw[:, : w // 2].copy(), window)
    (rx, ry), _ = cv2.phaseCorrelate(ref[:, w // 2 :].copy(), raw[:, w // 2 :].copy(), window)
    full_h = w * moved.shape[0] / moved.shape[1]
    expected = [(lx - rx) / 2 / w, (ly - ry) / 2 / full_h]
    np.testing.assert_allclose(tracker.shift(moved)[2:], expected, rtol=0, atol=1e-6)


def test_band_starts_below_the_lowest_chin_or_not_at_all():
    frame = _textured_frame()
    t = build_torso_tracker(frame, np.array([0.55, 0.62, 0.6]))
    assert t is not None and t.band.top == pytest.approx(0.66)
    assert build_torso_tracker(frame, np.array([0.5, 0.95])) is None  # the chin reaches the bottom


def test_the_thinnest_band_built_still_measures_known_shifts():
    chin = 1 - MIN_BAND - 0.04 - 1e-4  # the lowest chin that leaves a band (28 rows of a square frame)
    errors = []
    for seed in range(4):
        frame = _textured_frame(seed=seed)
        thin = build_torso_tracker(frame, np.array([chin]))
        assert thin is not None and thin.reference.shape == (28, 256)
        for dx, dy in [(3.5, -2.0), (-7.25, 1.5), (1.0, 0.5), (0.3, -0.7)]:
            errors.append(np.abs(thin.shift(_shifted(frame, dx, dy))[:2] * frame.shape[0] - [dx, dy]))
    # pixels of the 320² frame; a thin band measures the vertical shift less well than a tall one (0.25 px)
    assert np.all(np.median(errors, 0) <= [0.15, 0.25]) and np.max(errors) < 1.0
    assert build_torso_tracker(frame, np.array([chin + 0.01])) is None  # a little lower: no band


def test_frame_of_another_aspect_ratio_is_refused():
    frame = _textured_frame()
    band = TorsoBand(0.7)
    tracker = TorsoTracker(band, band.extract(frame))
    with pytest.raises(InputError, match="aspect"):
        tracker.shift(frame[:200])


@pytest.fixture(scope="module")
def german_dataset(tmp_path_factory):
    from nerfvc.face.prepare import prepare

    out = tmp_path_factory.mktemp("ds") / "german"
    prepare(GERMAN, out, max_frames=24, size=256, progress=False)
    return out


def test_prepared_dataset_has_torso_shifts_the_tracker_reproduces(german_dataset):
    from nerfvc.face.prepare import read_png

    f = load_features(german_dataset / "features.npz")
    meta = json.loads((german_dataset / TORSO_FILE).read_text())
    assert f["torso"].shape == (24, 4) and f["torso"].dtype == np.float32  # the shift, then the halves
    assert 0.5 <= meta["top"] < 0.9
    np.testing.assert_array_equal(f["torso"][0, :2], 0)  # frame 0 is the reference
    np.testing.assert_allclose(f["torso"][0, 2:], 0, atol=2e-4)  # its halves' peaks: within 0.05 px
    assert np.abs(f["torso"][:, 2:]).max() > 1e-3  # the halves do measure something on a real clip
    tracker = FaceTracker.from_dir(german_dataset)
    assert tracker.torso is not None
    i = 20
    frame = read_png(german_dataset / "frames" / f"{i:06d}.png")
    got = tracker.track(frame)
    np.testing.assert_allclose(got.torso, f["torso"][i], atol=1e-6)
    tracker.close()


def test_a_close_up_without_a_torso_band_gets_zero_shifts(small_dataset):
    f = load_features(small_dataset / "features.npz")  # d9: the chin reaches the bottom of the frame
    assert json.loads((small_dataset / TORSO_FILE).read_text())["top"] is None
    np.testing.assert_array_equal(f["torso"], 0)
    assert TorsoTracker.from_dir(small_dataset) is None


def test_measuring_does_not_change_the_tracker():
    frame = _textured_frame(seed=3)
    band = TorsoBand(0.7)
    tracker = TorsoTracker(band, band.extract(frame))
    moved = _shifted(frame, 2.0, 1.0)
    first = tracker.shift(moved)
    for _ in range(3):
        np.testing.assert_array_equal(tracker.shift(moved), first)
