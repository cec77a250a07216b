"""Landmark AU detectors and pose on real frames of the german clip."""

from __future__ import annotations

import numpy as np

from nerfvc.eval import face as F

# Found once by scanning the inner-lip gap (IOD units) over the clip: 458 wide open (0.17), 423 closed (0.0),
# 145 mid-blink (eye aspect ratio 25% below the median).
OPEN, CLOSED, BLINK = 458, 423, 145


def _presence(german, idx):
    neutral_frames = german[::10]
    lms, ok = F.landmarks(neutral_frames)
    ref = F.reference_shape(lms, ok)
    _, canon = F.align(lms, ok, ref)
    neutral = F.au_neutral(F.au_features(canon))
    lt, okt = F.landmarks(german[idx])
    angles, ct = F.align(lt, okt, ref)
    assert okt.all() and np.abs(angles).max() < 15
    return dict(zip(F.AU_NAMES, F.au_presence(F.au_features(ct), neutral).T))


def test_mouth_and_blink_aus_fire_where_they_should(german):
    p = _presence(german, [OPEN, CLOSED, BLINK])
    assert p["AU25"].tolist()[:2] == [True, False]
    assert p["AU26"].tolist()[:2] == [True, False]
    assert p["AU45"].tolist() == [False, False, True]


def test_pose_of_a_rotated_face_is_recovered():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(F.N_LANDMARKS, 3))
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", [5.0, -10.0, 3.0], degrees=True).as_matrix()
    lms = (2.5 * ref @ r.T + [100, 120, 0])[None].astype(np.float32)
    angles, canon = F.align(lms, np.array([True]), ref)
    np.testing.assert_allclose(angles[0], [5.0, -10.0, 3.0], atol=1e-3)
    np.testing.assert_allclose(canon[0], ref, atol=1e-4)
