"""The sender-side quality guard (issue 17): feature statistics fire on out-of-range expressions and poses
and not on in-range ones; guard-fit adds them to a model; pictures round-trip; the fallback policy sends a
picture when the render is bad and the compositor shows it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nerfvc.cli import main
from nerfvc.errors import BitstreamError, InputError
from nerfvc.guard.fallback import ALPHA_LEVELS, Compositor, GuardConfig, SenderGuard
from nerfvc.guard.picture import decode_picture, encode_picture
from nerfvc.guard.stats import GUARD_FILE, GUARD_JSON, GuardStats
from nerfvc.modeldir import read_model_manifest
from nerfvc.train.synthetic import make_synthetic_dataset

E = 12
MIX = np.random.default_rng(99).normal(size=(2, E + 2)) * np.linspace(1, 0.2, E + 2)


def _features(n, rng, deg=5.0):
    """Expressions (E) + 2 torso values driven by 2 latent factors (as PCA coefficients are by a few action
    units) that sweep their range, poses rotating up to ``deg`` degrees, all with small noise."""
    z = rng.uniform(-1, 1, (n, 2))
    x = z @ MIX + 0.01 * rng.normal(size=(n, E + 2))
    x[:, E:] *= 0.02  # torso shift: fractions of the frame
    ang = rng.uniform(-deg, deg, (n, 3))
    rot = Rotation.from_euler("xyz", ang, degrees=True).as_matrix().reshape(n, 9)
    tr = np.tile([0.0, 0.0, 0.5], (n, 1)) + 0.002 * rng.normal(size=(n, 3))
    return x, np.concatenate([rot, tr], axis=1)


@pytest.fixture(scope="module")
def stats():
    x, pose = _features(400, np.random.default_rng(0))
    return GuardStats.fit(x, pose, expression_dim=E, fps=25.0)


def test_guard_quiet_in_range_fires_out_of_range(stats):
    rng = np.random.default_rng(1)
    x, pose = _features(200, rng)  # the same kind of motion, another draw
    assert stats.fires(x, pose).mean() < 0.05
    big = x + 3 * MIX[0] * np.r_[np.ones(E), 0.02, 0.02]  # expressions far beyond the training range
    assert stats.fires(big, pose).all()
    turned = pose.copy()  # head turned 35 degrees further than any training frame
    r = Rotation.from_euler("y", 35, degrees=True) * Rotation.from_matrix(pose[:, :9].reshape(-1, 3, 3))
    turned[:, :9] = r.as_matrix().reshape(-1, 9)
    assert stats.fires(x, turned).all()
    c = stats.components(x, turned)
    assert (c["angles"] > 20).all() and (c["rotation"] > c["expression"]).all()


def test_guard_stats_save_load(tmp_path, stats):
    stats.save(tmp_path)
    back = GuardStats.load(tmp_path)
    x, pose = _features(50, np.random.default_rng(2), deg=20)
    np.testing.assert_allclose(back.score(x, pose), stats.score(x, pose), rtol=1e-5)
    with pytest.raises(InputError, match="features have 5 values"):
        back.score(x[:, :5], pose)
    (tmp_path / GUARD_JSON).write_text(json.dumps({"format": "nerfvc-guard", "version": 1, "scale": {}}))
    with pytest.raises(InputError, match="malformed guard"):
        GuardStats.load(tmp_path)
    with pytest.raises(InputError, match="guard-fit"):
        GuardStats.load(tmp_path / "nothing")


def test_guard_fit_command(tmp_path, capsys):
    ds = make_synthetic_dataset(tmp_path / "ds", num_frames=24, size=32, torso_motion=True)
    model = tmp_path / "model"
    assert main(["train", str(ds), "-o", str(model), "--iters", "1", "--eval-frames", "1"]) == 0
    files = read_model_manifest(model)["files"]
    assert GUARD_FILE in files and GUARD_JSON in files  # training writes the guard into the model
    (model / GUARD_FILE).unlink()
    (model / GUARD_JSON).unlink()
    assert main(["guard-fit", str(model), str(ds)]) == 2  # the manifest lists files that are gone
    assert "missing" in capsys.readouterr().err
    from nerfvc.modeldir import finalize_model_dir

    fp0 = finalize_model_dir(model)  # an older model without the guard
    assert main(["guard-fit", str(model), str(ds), "--threshold", "3"]) == 0
    m = read_model_manifest(model)
    assert m["fingerprint"] != fp0 and GUARD_FILE in m["files"]
    assert GuardStats.load(model).threshold == 3.0
    assert main(["guard-fit", str(model), str(tmp_path / "nope")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err


@pytest.mark.parametrize("codec,q", [("hevc", 40), ("webp", 50), ("jpeg", 60)])
def test_picture_round_trip(codec, q):
    y, x = np.mgrid[0:96, 0:128]
    frame = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.uint8)
    payload = encode_picture(frame, 64, codec, q)
    pic = decode_picture(payload)
    assert pic.shape == (48, 64, 3)
    small = frame[::2, ::2][::1][:48, :64]
    assert np.abs(pic.astype(int) - small.astype(int)).mean() < 12
    with pytest.raises(BitstreamError):
        decode_picture(payload[:1] + bytes(len(payload) - 1))
    with pytest.raises(BitstreamError):
        decode_picture(b"\x09abc")
    with pytest.raises(InputError):
        encode_picture(frame, 64, "gif")


def test_fallback_policy_and_compositor():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    cam = np.stack([x * 2, y * 2, 255 - x], -1).astype(np.uint8)
    good = np.clip(cam.astype(int) + rng.integers(-3, 4, cam.shape), 0, 255).astype(np.uint8)
    guard, comp = SenderGuard(GuardConfig(check_size=32, picture_size=64, min_interval=2)), Compositor()
    shown = []
    for i in range(12):
        bad = i >= 4  # from frame 4 on the render is noise
        render = rng.integers(0, 256, cam.shape, dtype=np.uint8) if bad else good
        packets, dec = guard.step(i, cam, render)
        assert dec.fired == bad
        comp.add(packets)
        shown.append(comp.compose(i, render))
        if not bad:
            assert dec.alpha == 0 and np.array_equal(shown[-1], render)
    assert dec.alpha == ALPHA_LEVELS and comp.frames_in_fallback == 8
    err = np.abs(shown[-1].astype(int) - cam.astype(int)).mean()
    assert err < 10  # the held picture, not the noise
    with pytest.raises(InputError):
        SenderGuard(GuardConfig(check_size=2))


def test_pictures_stay_within_the_budget():
    """A render that stays bad asks for pictures on every try; the bits sent never exceed the bucket
    (``burst_bits`` + ``max_picture_kbps`` over the frames so far), and the budget still buys pictures."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:128, 0:128]
    frames = [np.stack([x * 2, y * 2, (255 - x + 9 * i) % 256], -1).astype(np.uint8) for i in range(40)]
    one = 8 * len(encode_picture(frames[0], 64, "hevc", 42)) + 88  # about one picture with its framing
    cfg = GuardConfig(
        check_size=32, picture_size=64, min_interval=1, refresh_db=0.0, max_picture_kbps=0.5, burst_bits=one
    )
    guard, fps, sent = SenderGuard(cfg, fps=25.0), 25.0, 0
    for i, cam in enumerate(frames):
        _, dec = guard.step(i, cam, rng.integers(0, 256, cam.shape, dtype=np.uint8))
        sent += dec.picture_bits
        assert sent <= cfg.burst_bits + cfg.max_picture_kbps * 1000 * (i + 1) / fps
    assert 0 < sent and guard.held is not None


def test_guarded_frames_for_eval():
    """nerfvc eval's guard path: a render that goes bad gets fallback frames, bits and a share."""
    from nerfvc.guard.sequence import guarded_frames

    class FakeRenderer:  # renders the camera frame, or noise for "out of range" frames
        def __init__(self, cam):
            self.cam = cam

        def render(self, expression, pose, w, h):
            i = int(expression[0])
            img = self.cam[i] if i < 5 else np.random.default_rng(i).integers(0, 256, self.cam[i].shape)
            return shrink(img.astype(np.uint8), w)

    from nerfvc.guard.picture import shrink

    y, x = np.mgrid[0:64, 0:64]
    cam = np.stack([np.stack([x * 3, y * 3, x + y + 4 * i], -1) for i in range(10)]).astype(np.uint8)
    expr = np.arange(10, dtype=np.float32)[:, None]
    r = FakeRenderer(cam)
    rendered = np.stack([r.render(expr[i], None, 64, 64) for i in range(10)])
    shown, info = guarded_frames(r, cam, expr, np.zeros((10, 12)), rendered, 25.0, GuardConfig(check_size=32))
    assert info["pictures"] >= 1 and info["fallback_bytes"] > 0 and info["fallback_kbps"] > 0
    assert 0.5 <= info["fallback_share"] <= 0.6  # frames 5..9
    assert np.array_equal(shown[:5], rendered[:5])
    err_shown = np.abs(shown[5:].astype(int) - cam[5:]).mean()
    assert err_shown < np.abs(rendered[5:].astype(int) - cam[5:]).mean() / 3


def test_a_picture_the_receiver_would_not_show_is_not_sent():
    """The guard fires (an unreachable first_db) on a render as good as any picture: it codes a picture, finds
    it no better than the render and sends nothing, trying again only after ``min_interval`` frames."""
    y, x = np.mgrid[0:128, 0:128]
    cam = np.stack([x * 2, y * 2, 255 - x], -1).astype(np.uint8)
    guard = SenderGuard(GuardConfig(check_size=32, picture_size=64, first_db=90.0, min_interval=3))
    decisions = [guard.step(i, cam, cam)[1] for i in range(6)]  # the render is the camera frame itself
    assert all(d.fired for d in decisions)
    assert all(d.picture_bits == 0 and d.packet_bits == 0 and d.alpha == 0 for d in decisions)
    assert guard.held is None and guard.last_picture == 3  # tried at frames 0 and 3
