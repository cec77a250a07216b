"""``nerfvc prepare`` / ``inspect``: dataset contract, masks, background, resume, contact sheet."""

import json

import cv2
import numpy as np
import pytest
from face_testdata import GERMAN

import nerfvc.face.prepare as prep
from nerfvc.camera import Camera
from nerfvc.cli import main
from nerfvc.face.mesh import FACE_OVAL
from nerfvc.face.model import FaceModel
from nerfvc.face.segment import BACKGROUND, HEAD, TORSO
from nerfvc.features import load_features


def _read(path, gray=False):
    return prep.read_png(path, gray=gray)


def test_dataset_follows_the_contract(small_dataset):
    d = small_dataset
    m = json.loads((d / "manifest.json").read_text())
    assert m["format"] == "nerfvc-dataset" and m["complete"] is True
    assert m["num_frames"] == 40 and (m["width"], m["height"]) == (512, 512)
    assert m["split"] == {"train": [0, 32], "test": [32, 40]}
    assert m["fps"] == pytest.approx(30.0) and "mediapipe" in m["tools"]
    assert m["crop"][2:] == [480, 480]  # the 512x480 clip was cropped to a square around the face
    cam = Camera.from_dict(m["camera"])
    assert (cam.width, cam.height) == (512, 512)
    assert sorted(p.name for p in (d / "frames").iterdir()) == [f"{i:06d}.png" for i in range(40)]
    assert len(list((d / "masks").iterdir())) == 40
    assert not (d / ".work").exists()
    f = load_features(d / "features.npz")
    assert f["expression"].shape == (40, 79) and f["expression"].dtype == np.float32
    assert f["pose"].shape == (40, 12) and f["landmarks"].shape == (40, 478, 3)
    assert f["valid"].all() and f["timestamps"].dtype == np.float64
    np.testing.assert_allclose(np.diff(f["timestamps"]), 1 / 30, atol=1e-3)
    meta = json.loads((d / "face_model.json").read_text())
    assert meta["expr_dims"] == 79 and meta["head_bounds_coverage"] > 0.99
    model = FaceModel.load(d)
    uv = model.project(f["expression"], f["pose"], cam)
    assert np.linalg.norm(uv - f["landmarks"][..., :2], axis=-1).mean() < 1.0
    assert _read(d / "frames/000000.png").shape == (512, 512, 3)
    cov = json.loads((d / "coverage.json").read_text())  # enrollment coverage of the 32 training frames
    assert cov["train_frames"] == 32 and cov["test_frames"] == 8 and 0 <= cov["test_frames_outside"] <= 1
    assert all(r["spread"] >= 0 for r in cov["measures"].values())


def test_masks_put_the_face_in_head_and_background_is_empty(small_dataset):
    d = small_dataset
    f = load_features(d / "features.npz")
    bg = _read(d / "background.png").astype(np.int16)
    always_bg = np.ones((512, 512), bool)
    for i in range(0, 40, 5):
        mask = _read(d / f"masks/{i:06d}.png", gray=True)
        assert set(np.unique(mask)) == {BACKGROUND, TORSO, HEAD}
        face = np.zeros((512, 512), np.uint8)
        cv2.fillPoly(face, [np.round(f["landmarks"][i, FACE_OVAL, :2]).astype(np.int32)], 1)
        face = face.astype(bool)
        assert (mask[face] == HEAD).mean() > 0.99
        # torso below the chin, background in the top corners
        chin = f["landmarks"][i, 152, :2].round().astype(int)
        assert (mask[chin[1] + 40 :, chin[0] - 10 : chin[0] + 10] == TORSO).mean() > 0.8
        assert mask[:20, :20].max() == BACKGROUND and mask[:20, -20:].max() == BACKGROUND
        frame = _read(d / f"frames/{i:06d}.png").astype(np.int16)
        # the background image does not contain the face...
        assert np.abs(bg[face] - frame[face]).mean() > 25
        always_bg &= mask == BACKGROUND
    # ...but matches the frames where the room is visible
    always_bg = cv2.erode(always_bg.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    frame = _read(d / "frames/000000.png").astype(np.int16)
    assert always_bg.mean() > 0.2
    assert np.abs(bg[always_bg] - frame[always_bg]).mean() < 4


def test_inspect_writes_a_contact_sheet(small_dataset, tmp_path):
    assert main(["inspect", str(small_dataset), "-o", str(tmp_path / "sheet.png")]) == 0
    sheet = _read(tmp_path / "sheet.png")
    # 5 rows of frames, then the background beside the text, which the coverage lines make taller
    assert sheet.shape[1:] == (3 * 256, 3) and 6 * 256 < sheet.shape[0] < 8 * 256
    assert sheet.std() > 20  # real picture content


def test_prepare_resumes_after_interruption(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    real = prep.write_png
    calls = {"n": 0}

    def flaky(path, img):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        real(path, img)

    monkeypatch.setattr(prep, "write_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(GERMAN, out, max_frames=16, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is False
    done = sorted((out / "frames").iterdir())
    assert len(done) == 8
    mtime = done[0].stat().st_mtime_ns
    monkeypatch.setattr(prep, "write_png", real)
    # other parameters → refused, never mixed
    assert main(["prepare", str(GERMAN), "-o", str(out), "--max-frames", "12", "-q"]) == 2
    assert main(["prepare", str(GERMAN), "-o", str(out), "--max-frames", "16", "-q"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is True and m["num_frames"] == 16
    assert done[0].stat().st_mtime_ns == mtime  # frames from the first run were kept, not redone
    assert load_features(out / "features.npz")["pose"].shape == (16, 12)


def test_resume_is_refused_when_the_source_video_changed(tmp_path, monkeypatch, capsys):
    from face_testdata import AOC

    video, out = tmp_path / "clip.mp4", tmp_path / "ds"
    video.write_bytes(GERMAN.read_bytes())
    real = prep.write_png
    calls = {"n": 0}

    def flaky(path, img):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, img)

    monkeypatch.setattr(prep, "write_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(video, out, max_frames=8, progress=False)
    monkeypatch.setattr(prep, "write_png", real)
    video.write_bytes(AOC.read_bytes())  # another person's clip at the same path
    capsys.readouterr()
    assert main(["prepare", str(video), "-o", str(out), "--max-frames", "8", "-q"]) == 2
    err = [e for e in capsys.readouterr().err.splitlines() if e.startswith("nerfvc ")]
    assert len(err) == 1 and "different source video" in err[0]
    assert len(list((out / "frames").iterdir())) == 2  # the frames of the first clip were not mixed in


def test_portrait_video_is_cropped_around_the_face(tmp_path):
    from nerfvc.io import read_frames, write_video

    frames = []
    for f, _ in read_frames(GERMAN, max_frames=10):
        tall = np.full((900, 512, 3), 40, np.uint8)  # phone-like portrait frame, face in the lower part
        tall[350:862] = f
        frames.append(tall)
    video = tmp_path / "portrait.mp4"
    write_video(video, frames, fps=25)
    out = prep.prepare(video, tmp_path / "ds", progress=False, expr_dims=4)
    m = json.loads((out / "manifest.json").read_text())
    x0, y0, w, h = m["crop"]
    assert (x0, w, h) == (0, 512, 512) and 300 <= y0 <= 388  # the square follows the face, not the centre
    assert m["valid_frames"] == 10 and (m["width"], m["height"]) == (512, 512)


def test_smoothed_dataset_and_the_sender_make_the_same_features(tmp_path):
    from dataclasses import asdict

    from nerfvc.face.smoothing import SmoothingParams, smooth_sequence
    from nerfvc.face.tracker import FaceTracker

    out = prep.prepare(GERMAN, tmp_path / "ds", max_frames=12, expr_dims=8, smoothing=True, progress=False)
    meta = json.loads((out / "face_model.json").read_text())
    assert meta["feature_smoothing"] == asdict(SmoothingParams())
    feats = load_features(out / "features.npz")
    model = FaceModel.load(out)
    cam = Camera.from_dict(json.loads((out / "manifest.json").read_text())["camera"])
    raw_e, raw_p = model.fit(feats["landmarks"], cam)
    e, p = smooth_sequence(raw_e, raw_p, feats["timestamps"], model.smoothing)
    np.testing.assert_allclose(feats["expression"], e, atol=1e-6)
    np.testing.assert_allclose(feats["pose"], p, atol=1e-6)
    assert np.abs(feats["pose"] - raw_p).max() > 1e-5  # the filter did something
    # the sender's tracker filters the same way (it follows the face model), so it reproduces them
    frames = [_read(out / f"frames/{i:06d}.png") for i in range(12)]
    with FaceTracker.from_dir(out) as tr:
        assert tr.smoothing is True
        sent = [tr.track(f, t) for f, t in zip(frames, feats["timestamps"])]
    np.testing.assert_allclose(np.array([s.pose for s in sent]), feats["pose"], atol=2e-3)
    # a dataset written before the option existed resumes as an unsmoothed one
    m = json.loads((out / "manifest.json").read_text())
    del m["params"]["smoothing"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert main(["prepare", str(GERMAN), "-o", str(out), "--max-frames", "12", "--expr-dims", "8", "-q"]) == 0
    assert (
        main(
            [
                "prepare",
                str(GERMAN),
                "-o",
                str(out),
                "--max-frames",
                "12",
                "--expr-dims",
                "8",
                "--smoothing",
                "-q",
            ]
        )
        == 2
    )
