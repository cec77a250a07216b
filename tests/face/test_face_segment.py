"""Segmentation helpers: head region and the background hole fill."""

import numpy as np

from nerfvc.face.segment import HEAD, TORSO, estimate_background, label_mask, pull_push_fill


def test_pull_push_fill_keeps_known_pixels_and_blends_holes():
    img = np.zeros((64, 64, 3), np.float32)
    img[:, 32:] = 100.0
    known = np.ones((64, 64), bool)
    known[16:48, 16:48] = False
    out = pull_push_fill(img, known)
    np.testing.assert_allclose(out[known], img[known], atol=1e-3)
    row = out[32, 16:48, 0]
    assert 0 <= row.min() and row.max() <= 100
    assert row[:6].mean() < 35 and row[-6:].mean() > 65 and (np.diff(row) >= -1).all()  # smooth left → right


def test_estimate_background_ignores_the_person():
    rng = np.random.default_rng(0)
    room = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    frames, masks = [], []
    for k in range(10):
        f = room.copy()
        m = np.zeros((48, 48), np.uint8)
        x = 5 + 3 * k  # a moving "person"
        f[10:40, x : x + 8] = 255
        m[10:40, x : x + 8] = HEAD
        frames.append(f)
        masks.append(m)
    bg, holes = estimate_background(frames, masks, margin=0.0)
    assert not holes.any()  # every pixel was visible in some frame
    assert np.abs(bg.astype(int) - room).mean() < 1


def test_label_mask_without_landmarks_is_torso_only():
    person = np.zeros((32, 32), np.float32)
    person[8:, 8:24] = 0.9
    m = label_mask(person, None)
    assert set(np.unique(m)) == {0, TORSO}
