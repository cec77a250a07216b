"""Shared contracts: camera, pose packing, features files, model fingerprint, atomic writes, CLI errors."""

import json

import numpy as np
import pytest

from nerfvc.camera import Camera
from nerfvc.cli import main
from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.features import (
    load_features,
    pose_to_rt,
    rotation_angle_deg,
    rt_to_pose,
    save_features,
    upsample_features,
)
from nerfvc.fsutil import atomic_path
from nerfvc.modeldir import finalize_model_dir, read_model_manifest


def test_camera_scaling_preserves_projection_in_relative_coordinates():
    cam = Camera.from_fov(512, 384, 30.0)
    pts = np.array([[0.1, -0.2, 3.0], [-0.3, 0.25, 4.0]])
    uv = cam.project(pts)
    uv2 = cam.scaled(1024, 768).project(pts)
    np.testing.assert_allclose(uv2, uv * 2)
    assert Camera.from_dict(json.loads(json.dumps(cam.to_dict()))) == cam


def test_pose_roundtrip():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 3, 3)))
    t = rng.normal(size=(5, 3))
    r2, t2 = pose_to_rt(rt_to_pose(q, t))
    np.testing.assert_array_equal(r2, q)
    np.testing.assert_array_equal(t2, t)


def test_rotation_angle_between_poses():
    from scipy.spatial.transform import Rotation

    r = Rotation.from_rotvec([[0, 0, 0], [0, np.radians(30), 0], [np.radians(-5), 0, 0]]).as_matrix()
    poses = rt_to_pose(r, np.zeros((3, 3)))
    np.testing.assert_allclose(rotation_angle_deg(poses[0], poses), [0, 30, 5], atol=1e-5)
    assert rotation_angle_deg(poses, poses).shape == (3,)


def test_upsample_features_interpolates_between_sent_frames():
    """Every m-th frame sent: a constant-rate turn and a linear code come back exactly in between (slerp,
    linear), and the frames after the last sent one hold it."""
    from scipy.spatial.transform import Rotation

    n = 10
    rot = Rotation.from_rotvec(np.outer(np.arange(n), [0.0, 0.04, 0.01])).as_matrix()
    pose = rt_to_pose(rot, np.outer(np.arange(n), [0.01, 0.0, -0.02]))
    code = np.outer(np.arange(n), [1.0, -0.5])
    c, p = upsample_features(code[::3], pose[::3], 3, n)  # frames 0, 3, 6, 9 sent
    assert c.shape == (n, 2) and p.shape == (n, 12)
    assert np.allclose(c, code, atol=1e-5) and np.allclose(p, pose, atol=1e-5)
    c, p = upsample_features(code[:8:4], pose[:8:4], 4, n)  # frames 0, 4 sent; 5..9 hold frame 4
    assert np.allclose(c[4:], code[4]) and np.allclose(p[4:], pose[4], atol=1e-6)
    assert not np.allclose(p[2], pose[0], atol=1e-3)  # in between, not held
    with pytest.raises(ValueError):
        upsample_features(code, pose, 0, n)


def test_features_file_roundtrip_and_errors(tmp_path):
    expr = np.arange(20, dtype=np.float32).reshape(2, 10)
    pose = np.zeros((2, 12), np.float32)
    save_features(tmp_path / "f.npz", expression=expr, pose=pose)
    back = load_features(tmp_path / "f.npz")
    np.testing.assert_array_equal(back["expression"], expr)
    with pytest.raises(InputError, match="missing array 'pose'"):
        save_features(tmp_path / "g.npz", expression=expr)
        load_features(tmp_path / "g.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a features"):
        load_features(tmp_path / "bad.npz")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_model_fingerprint_detects_changes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"weights")
    (tmp_path / "b.json").write_text("{}")
    fp = finalize_model_dir(tmp_path)
    assert read_model_manifest(tmp_path)["fingerprint"] == fp
    (tmp_path / "a.bin").write_bytes(b"weightz")
    with pytest.raises(ModelMismatchError, match=r"a\.bin was modified"):
        read_model_manifest(tmp_path)
    assert finalize_model_dir(tmp_path) != fp


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    code = main(["inspect", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nerfvc inspect: error:") and "\n" not in err


def test_cli_error_is_one_line_even_for_a_multi_line_message(monkeypatch, capsys):
    import sys
    import types

    import nerfvc.cli
    from nerfvc.errors import ModelMismatchError

    def fail(args):
        raise ModelMismatchError(
            "checkpoint was made with another config:\n  width: 64 != 128\n  depth: 2 != 4"
        )

    module = types.ModuleType("fake_commands")
    module.register = lambda sub: sub.add_parser("boom").set_defaults(func=fail)
    monkeypatch.setitem(sys.modules, "fake_commands", module)
    monkeypatch.setattr(nerfvc.cli, "COMMAND_MODULES", ["fake_commands"])
    assert main(["boom"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "nerfvc boom: error: checkpoint was made with another config: width: 64 != 128 depth: 2 != 4"
    )


def test_rate_lists_are_checked_in_one_place():
    from nerfvc.argtypes import rate_list

    assert rate_list("0.8, 1.5,3", "--kbps") == [0.8, 1.5, 3.0]
    assert rate_list("", "--kbps", allow_empty=True) == []
    for bad in ("", "fast", "1,-2", "0", "nan", "inf", "1,,x"):
        with pytest.raises(InputError, match="--kbps must be comma-separated positive rates"):
            rate_list(bad, "--kbps")
