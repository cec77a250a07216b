"""The encoder keeps a wink through the quantizer (``nerfvc.codec.wink``): the decoder's output winks as the
sent code does, frames that do not wink code to the same bytes, and many candidates reconstruct at once as
each one alone."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.codec.coder import model_pair, reconstruct
from nerfvc.codec.decoder import decode_stream
from nerfvc.codec.encoder import clip_kbps, encode_stream
from nerfvc.codec.fit import fit_codec
from nerfvc.codec.tables import POSE_DIM
from nerfvc.codec.wink import keep_wink
from nerfvc.face.eyes import EyeApertures
from nerfvc.face.synthetic import closing, symmetric_face

FP = "0" * 16
WINK = slice(20, 32)  # frames of the test clip that wink


@pytest.fixture(scope="module")
def person() -> dict:
    """A face model whose coefficients all carry some of the eyes, codec tables fitted on 400 frames that
    blink with both eyes (the eyes apart only by tracker noise), and a 60-frame clip whose frames 20-31
    wink the left eye."""
    mean, basis = symmetric_face(mixed=True)
    rng = np.random.default_rng(1)
    n = 400
    blink = np.zeros(n)
    for t in rng.choice(n - 4, 12, replace=False):
        blink[t : t + 3] = [0.5, 1.0, 0.5]
    apart = (closing(("left",)) - closing(("right",)))[None]  # (1,478,3)
    d = blink[:, None, None] * closing(("left", "right"))[None] + 0.0008 * rng.normal(size=(n, 1, 1)) * apart
    code = d.reshape(n, -1) @ basis + 0.0005 * rng.normal(size=(n, basis.shape[1]))  # (n,E)
    pose = np.tile([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0.6], (n, 1)) + np.r_[
        np.zeros(9), 1, 1, 2
    ] * 1e-3 * rng.normal(size=(n, 12))
    tables = fit_codec(code, pose, face_model=(mean, basis))
    clip = code[:60].copy()
    clip[WINK] = closing(("left",)).reshape(-1) @ basis
    return {
        "eyes": EyeApertures.from_shape(mean, basis),
        "tables": tables,
        "code": code,
        "pose": pose,
        "clip": clip,
    }


def decoded_wink(person: dict, eyes: EyeApertures | None, **options) -> tuple[np.ndarray, int]:
    """Mean decoded openings (left, right eye) of the winking frames and the stream's bytes."""
    data = encode_stream(
        person["tables"], FP, person["clip"], person["pose"][:60], 25.0, eyes=eyes, **options
    )
    decoded, _, _ = decode_stream(data, person["tables"], FP)
    return person["eyes"].openings(decoded[WINK]).mean(0), len(data)


@pytest.mark.parametrize("step_index", [0, 48])
def test_a_held_wink_is_decoded_as_a_wink(person, step_index):
    eyes = person["eyes"]
    assert eyes.asymmetry(person["clip"][25]) == pytest.approx(-1.0)  # the left eye shut, the right open
    assert np.abs(eyes.asymmetry(person["code"])).max() < eyes.threshold  # the training frames never wink
    plain, plain_bytes = decoded_wink(person, None, step_index=step_index)
    kept, kept_bytes = decoded_wink(person, eyes, step_index=step_index)
    assert abs(plain[0] - plain[1]) < eyes.threshold  # the plain quantizer flattens it: no wink to draw
    assert plain[0] > 0.8  # ... and the shut eye decodes open
    assert kept[0] < 0.15 and kept[1] > 0.85  # the left eye decodes shut and the right one open
    assert plain_bytes < kept_bytes < plain_bytes + 12 * 16  # a few bytes per winking frame


def test_frames_that_do_not_wink_code_to_the_same_bytes(person):
    eyes, tables = person["eyes"], person["tables"]
    for options in ({"step_index": 16}, {"step_index": 40, "frames_per_packet": 2}, {"kbps": 1.0}):
        with_eyes = encode_stream(
            tables, FP, person["code"][:80], person["pose"][:80], 25.0, eyes=eyes, **options
        )
        without = encode_stream(tables, FP, person["code"][:80], person["pose"][:80], 25.0, **options)
        assert with_eyes == without


def test_the_rate_control_counts_the_bits_a_wink_keeps(person):
    """With a target the bisection codes real streams with the wink kept: the stream stays within it."""
    eyes, tables = person["eyes"], person["tables"]
    data = encode_stream(tables, FP, person["clip"], person["pose"][:60], 25.0, kbps=1.0, eyes=eyes)
    assert len(data) * 8 / (60 / 25.0) / 1000 <= 1.0
    decoded, _, _ = decode_stream(data, tables, FP)
    left, right = eyes.openings(decoded[WINK]).mean(0)
    assert left < 0.3 and right - left > eyes.threshold
    fine = clip_kbps(tables, FP, person["clip"], person["pose"][:60], 0, eyes=eyes)
    assert fine > clip_kbps(tables, FP, person["clip"], person["pose"][:60], 0)  # the kept wink costs bits


def test_candidates_reconstruct_together_as_each_alone(person):
    tables = person["tables"]
    rng = np.random.default_rng(3)
    hist = [rng.integers(-5, 6, len(tables.mean)) for _ in range(2)]
    for model, h in zip(model_pair(tables, 8), (None, hist), strict=True):
        q = rng.integers(-6, 7, size=(9, len(tables.mean)))
        together = reconstruct(tables, model, q, h, 8)
        alone = np.stack([reconstruct(tables, model, row, h, 8) for row in q])
        assert np.array_equal(together, alone)


def test_a_code_that_does_not_wink_keeps_its_indices(person):
    tables, eyes = person["tables"], person["eyes"]
    key, _ = model_pair(tables, 0)
    vec = tables.features_to_vec(person["code"][5], person["pose"][5])
    q = tables.quantize(vec, 0)
    assert keep_wink(eyes, tables, key, None, 0, "mmse", person["code"][5], q) is q
    wink = tables.quantize(tables.features_to_vec(person["clip"][25], person["pose"][25]), 0)
    moved = keep_wink(eyes, tables, key, None, 0, "mmse", person["clip"][25], wink)
    assert not np.array_equal(moved, wink)
    assert np.array_equal(moved[:POSE_DIM], wink[:POSE_DIM])  # the pose is never moved
