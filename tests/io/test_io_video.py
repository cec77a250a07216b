"""nerfvc.io.video: probing, true timestamps (incl. variable frame rate), writing, bad input."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from nerfvc.errors import InputError
from nerfvc.io import VideoWriter, count_frames, probe, read_frame_range, read_frames, write_video

CLIPS = Path(__file__).parents[2] / "../shared/data/clips"
GERMAN = CLIPS / "mimictalk_german_anchor_20s.mp4"
D9 = CLIPS / "liveportrait_d9_man_glasses_room.mp4"


def test_probe_real_clips():
    info = probe(GERMAN)
    assert (info.width, info.height, info.num_frames) == (512, 512, 500)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(20.0, abs=0.1)
    d9 = probe(D9)
    assert (d9.width, d9.height, d9.fps) == (512, 480, pytest.approx(30.0))


def test_read_frames_timestamps_start_and_limit():
    frames = list(read_frames(D9, max_frames=10))
    assert len(frames) == 10
    img, _ = frames[0]
    assert img.dtype == np.uint8 and img.shape == (480, 512, 3)
    ts = np.array([t for _, t in frames])
    np.testing.assert_allclose(np.diff(ts), 1 / 30, atol=1e-3)
    later = list(read_frames(D9, start=5.0, max_frames=3))
    assert [round(t, 3) for _, t in later] == [5.0, 5.033, 5.067]
    # the frame at 5 s decoded after a seek equals the one decoded sequentially
    seq = next(f for f, t in read_frames(D9, max_frames=151) if abs(t - 5.0) < 1e-6)
    np.testing.assert_array_equal(seq, later[0][0])


def test_variable_frame_rate_keeps_true_timestamps(tmp_path):
    path = tmp_path / "vfr.mp4"
    times_ms = [0, 40, 80, 200, 240, 500, 530]  # irregular
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * k, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got = [t for _, t in read_frames(path)]
    np.testing.assert_allclose(got, np.array(times_ms) / 1000, atol=2e-3)


def _phone_video(path: Path, rotation: int, frames: int = 3) -> Path:
    """A 96x64 clip with a white block in its top-left corner, stored with a display rotation."""
    img = np.zeros((64, 96, 3), np.uint8)
    img[:16, :32] = 255
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.set_display_rotation(rotation)
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("rotation", [90, -90])
def test_display_rotation_is_applied(tmp_path, rotation):
    path = _phone_video(tmp_path / "phone.mp4", rotation)
    info = probe(path)
    assert (info.width, info.height) == (64, 96)
    frame, _ = next(read_frames(path))
    assert frame.shape == (96, 64, 3)
    # +90 (counter-clockwise, ffmpeg's convention): top-left block → bottom-left; -90: → top-right
    corner = frame[80:, :10] if rotation == 90 else frame[:10, 54:]
    assert corner.mean() > 200 and frame.mean() < 100


def test_frame_range_by_index_and_exact_count(tmp_path):
    path = tmp_path / "ramp.mp4"
    write_video(path, [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(10)], fps=25)
    assert count_frames(path) == 10
    got = read_frame_range(path, 7, 2)
    assert got.shape == (2, 32, 48, 3) and got.dtype == np.uint8
    assert [round(float(f.mean()) / 20) for f in got] == [7, 8]
    assert len(read_frame_range(path, 4)) == 6
    with pytest.raises(InputError, match="no frames from index 10"):
        read_frame_range(path, 10)


def test_eval_reads_rotated_clips_upright(tmp_path):
    """The evaluation's test split comes from the one reader, so a phone clip is scored upright."""
    from nerfvc.eval.run import load_test_split

    path = _phone_video(tmp_path / "phone.mp4", 90, frames=10)
    gt, previous, info = load_test_split(path)
    assert gt.shape == (2, 96, 64, 3) and previous.shape == (96, 64, 3)
    assert (info["width"], info["height"], info["num_frames"]) == (64, 96, 10)
    assert gt[0][80:, :10].mean() > 200  # the block is bottom-left, as in read_frames


def test_write_video_roundtrip_and_even_size(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((33, 45, 3)) * 255).astype(np.uint8)
    frames = [np.roll(base, k, axis=1) for k in range(8)]
    n = write_video(tmp_path / "o.mp4", frames, fps=12.5)
    assert n == 8
    info = probe(tmp_path / "o.mp4")
    assert (info.width, info.height, info.num_frames, info.fps) == (44, 32, 8, 12.5)
    back = [f for f, _ in read_frames(tmp_path / "o.mp4")]
    smooth = [np.full((32, 44, 3), 30 * k, np.uint8) for k in range(8)]
    write_video(tmp_path / "s.mp4", smooth, fps=25)
    err = [
        np.abs(a.astype(int) - b.astype(int)).mean()
        for (a, _), b in zip(read_frames(tmp_path / "s.mp4"), smooth)
    ]
    assert len(back) == 8 and max(err) < 3
    with pytest.raises(ValueError, match="differs"), VideoWriter(tmp_path / "x.mp4", 25) as w:
        w.write(smooth[0])
        w.write(np.zeros((20, 20, 3), np.uint8))


def test_bad_inputs_raise_input_error(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(InputError, match="not a readable video"):
        probe(text)
    with pytest.raises(InputError, match="file not found"):
        list(read_frames(tmp_path / "missing.mp4"))
    # cut-off download: the moov atom (at the end) is missing
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(GERMAN.read_bytes()[:400_000])
    with pytest.raises(InputError):
        list(read_frames(cut))
    # faststart file (index first) cut in half: decodes "fine" but ends early
    full = tmp_path / "fs.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 128, "yuv420p"
        rng = np.random.default_rng(1)
        for _ in range(50):
            f = av.VideoFrame.from_ndarray((rng.random((128, 128, 3)) * 255).astype(np.uint8), format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    half = tmp_path / "half.mp4"
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match=r"truncated|corrupt"):
        list(read_frames(half))
    with pytest.raises(InputError, match=r"truncated|corrupt"):  # also when fewer frames than asked for
        list(read_frames(half, max_frames=40))
    assert len(list(read_frames(half, max_frames=10))) == 10  # the frames asked for are there
    assert len(list(read_frames(full, max_frames=80))) == 50  # a whole video shorter than asked for


def test_interrupted_write_keeps_the_previous_video(tmp_path):
    out = tmp_path / "out.mp4"
    frames = [np.full((32, 32, 3), 10 * k, np.uint8) for k in range(10)]
    assert write_video(out, frames, fps=25) == 10

    def interrupted():
        yield from frames[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(out, interrupted(), fps=25)
    assert len(list(read_frames(out))) == 10  # the good file is intact, not a shorter valid-looking one
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # and no temporary file is left
