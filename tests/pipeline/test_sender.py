"""SenderPipeline: features files and tracked frames → model features (torso shift, lost-frame policy) →
the code sent → whole streams and live packets."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.codec.encoder import encode_stream
from nerfvc.codec.framing import HEADER_SIZE, StreamHeader
from nerfvc.codec.tables import load_model_tables
from nerfvc.errors import FaceError, InputError
from nerfvc.features import load_features, model_input
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline
from tests.pipeline.fakes import fake_tracker


def test_features_file_codes_exactly_the_codec_stream(tiny_model):
    ds, model = tiny_model
    sender = SenderPipeline.from_model_dir(model)
    assert sender.torso_dims == 2 and sender.codec.embedding is None
    clip = sender.read_features(ds / "features.npz")
    feats = load_features(ds / "features.npz")
    assert clip.features.shape == (24, 81) and clip.fps == pytest.approx(25.0)
    np.testing.assert_array_equal(clip.features, model_input(feats["expression"], feats["torso"], 2))
    assert clip.tracked.all() and clip.warning() is None
    data = sender.encode_stream(clip.features, clip.pose, 25.0, frames_per_packet=4)
    tables, fp = load_model_tables(model)  # without an embedding the features are the code: same bytes
    assert data == encode_stream(tables, fp, clip.features, clip.pose, fps=25.0, frames_per_packet=4)


class _StripeReceiver(ReceiverPipeline):
    """Draws a frame's features and pose as grey stripes, one per value, standardised by ``stats`` (the tiny
    model's NeRF is untrained): the closer the decoded features, the closer the picture."""

    stats: tuple[np.ndarray, np.ndarray]

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        mean, std = self.stats
        z = (np.concatenate([expression, pose]) - mean) / std  # (D+12,)
        row = np.clip(128 + 30 * z[np.arange(width) % len(z)], 0, 255)  # (W,)
        return np.repeat(np.broadcast_to(row, (height, width))[..., None], 3, axis=2).astype(np.uint8)


def test_the_sender_chooses_the_frame_step_by_rendering(tiny_model, monkeypatch):
    """With the camera frames and a rate, ``encode_stream`` codes the clip at each frame step the rate
    allows, renders what the receiver would decode, and keeps the frame step whose render is closest to the
    camera (the rule's own choice among the candidates); without them, the rule alone decides."""
    import nerfvc.pipeline.judge as judge_module
    from nerfvc.codec.encoder import clip_kbps
    from nerfvc.metrics import psnr

    ds, model = tiny_model
    sender = SenderPipeline.from_model_dir(model)
    receiver = _StripeReceiver(model, sender.codec)
    clip = sender.read_features(ds / "features.npz")
    values = np.concatenate([clip.features, clip.pose], 1)
    receiver.stats = values.mean(0), values.std(0) + 1e-6
    camera = np.stack([receiver.render(f, p, 32, 32) for f, p in zip(clip.features, clip.pose)])
    judges: list[judge_module.RenderJudge] = []

    class Recorded(judge_module.RenderJudge):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            judges.append(self)

    monkeypatch.setattr(judge_module, "RenderJudge", Recorded)
    tables = sender.codec.tables
    kbps = 0.8 * clip_kbps(tables, sender.codec.fingerprint, clip.features, clip.pose, 0, header=True)
    ruled = sender.encode_stream(clip.features, clip.pose, 25.0, kbps=kbps)
    assert not judges
    data = sender.encode_stream(clip.features, clip.pose, 25.0, camera, receiver, kbps=kbps)
    (judge,) = judges
    m_rule = StreamHeader.from_bytes(ruled[:HEADER_SIZE]).frame_step
    m = StreamHeader.from_bytes(data[:HEADER_SIZE]).frame_step
    assert m_rule in judge.scores and len(judge.scores) > 1
    assert judge.scores[m] == max(judge.scores.values())
    assert len(data) * 8 / 24 * 25 / 1000 <= kbps
    decoded = receiver.decode_stream(data)  # the score is the decoded render's mean PSNR to the camera
    size = judge_module.JUDGE_SIZE
    shown = [receiver.render(e, p, size, size) for e, p in zip(decoded.expression, decoded.pose)]
    cam = [judge_module.shrink(c, size) for c in camera]
    assert judge.scores[m] == pytest.approx(np.mean([psnr(a, b) for a, b in zip(shown, cam)]))
    with pytest.raises(InputError, match="camera frames"):
        sender.encode_stream(clip.features, clip.pose, 25.0, camera[:-1], receiver, kbps=kbps)


def test_encode_video_with_a_rate_chooses_the_frame_step_by_rendering(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """``nerfvc encode VIDEO --kbps K`` judges the frame steps by rendering (and says so); ``--frame-step-by
    rule``, a fixed ``--frame-step`` or a features file do not; every stream fits the rate."""
    import nerfvc.pipeline.judge as judge_module
    from nerfvc.cli import main
    from nerfvc.datasetdir import frame_path
    from nerfvc.io.video import write_video
    from nerfvc.train.dataset import load_rgb

    ds, model = tiny_model
    feats = load_features(ds / "features.npz")
    video = tmp_path / "in.mp4"
    write_video(video, iter([load_rgb(frame_path(ds, i)) for i in range(24)]), 25.0)
    judged: list[int] = []
    monkeypatch.setattr(judge_module.RenderJudge, "__call__", lambda self, m, k: judged.append(m) or -m)
    runs = {"render": [], "rule": ["--frame-step-by", "rule"], "fixed": ["--frame-step", "2"]}
    for name, extra in runs.items():
        fake_tracker(monkeypatch, feats["expression"], feats["pose"], torso=feats["torso"])
        out = tmp_path / f"{name}.nvc"
        args = [
            "encode",
            str(video),
            "--model",
            str(model),
            "-o",
            str(out),
            "--kbps",
            "3",
            "--refine-pose",
            "0",
        ]
        args += extra
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert ("chosen by rendering" in printed) == (name == "render"), printed
        assert (out.stat().st_size - HEADER_SIZE) * 8 / 24 * 25 / 1000 <= 3
        if name == "render":
            assert len(judged) > 1  # scored each candidate
            assert StreamHeader.from_bytes(out.read_bytes()[:HEADER_SIZE]).frame_step == min(judged)
    assert len(judged) == len(set(judged))  # only the first run judged


def _frames(n: int) -> list[tuple[np.ndarray, float]]:
    """``n`` distinct 24×32 frames at 25 fps."""
    return [(np.full((24, 32, 3), i, np.uint8), i / 25) for i in range(n)]


def test_track_clip_appends_the_torso_shift_and_fills_lost_frames(tiny_model, monkeypatch):
    model = tiny_model[1]
    rng = np.random.default_rng(0)
    expr, pose, torso = rng.normal(size=(8, 79)), rng.normal(size=(8, 12)), rng.normal(size=(8, 2))
    ok = [False, False, True, True, False, True, True, True]
    calls = fake_tracker(monkeypatch, expr, pose, ok, torso)
    clip = SenderPipeline.from_model_dir(model).track_clip(_frames(8), "clip.mp4", keep_frames=True)
    assert calls == [{"path": str(model), "max_num_faces": 2}]  # a second face fails a frame
    assert clip.features.shape == (8, 81) and clip.features.dtype == np.float32
    # the torso shift is measured in every frame, also without a face; frames before the first face repeat it
    np.testing.assert_array_equal(clip.features[2:, 79:], torso[2:].astype(np.float32))
    np.testing.assert_array_equal(clip.features[:2, 79:], torso[[2, 2]].astype(np.float32))
    for i, source in [(0, 2), (1, 2), (2, 2), (4, 3), (7, 7)]:  # before the first face: the first tracked
        np.testing.assert_array_equal(clip.features[i, :79], expr[source].astype(np.float32))
        np.testing.assert_array_equal(clip.pose[i], pose[source].astype(np.float32))
    np.testing.assert_array_equal(clip.tracked, ok)
    assert clip.fps == pytest.approx(25.0)
    assert clip.frames is not None and clip.frames.shape == (8, 24, 24, 3)  # cropped to the camera's aspect
    assert clip.warning() == (
        "clip.mp4: no single face in 3 of 8 frames (0, 1, 4); they repeat the nearest tracked frame"
    )


@pytest.mark.parametrize(
    ("ok", "error", "message"),
    [
        ([False] * 6, FaceError, "no single face found in any of 6 frames"),
        ([True, False, False, True, False, False], FaceError, "tracked in only 2 of 6 frames"),
        ([], InputError, "no frames"),
    ],
)
def test_track_clip_fails_without_a_face_in_most_frames(tiny_model, monkeypatch, ok, error, message):
    fake_tracker(monkeypatch, np.zeros((6, 79)), np.zeros((6, 12)), ok)
    with pytest.raises(error, match=message):
        SenderPipeline.from_model_dir(tiny_model[1]).track_clip(_frames(len(ok)), "clip.mp4")


def test_live_encoder_codes_like_the_whole_stream(tiny_model):
    ds, model = tiny_model
    sender = SenderPipeline.from_model_dir(model)
    clip = sender.read_features(ds / "features.npz")
    enc = sender.stream_encoder(25.0)
    packets = [enc.encode(f, p) for f, p in zip(clip.features, clip.pose)]
    whole = sender.encode_stream(clip.features, clip.pose, 25.0)
    assert b"".join(packets) == whole[HEADER_SIZE:]  # the same packets, one per frame
    header = StreamHeader.from_bytes(enc.header())
    assert header.fingerprint == sender.codec.fingerprint and header.code_dim == 81
    assert enc.last_reconstruction is not None and enc.last_reconstruction[0].shape == (81,)


def test_live_encoder_applies_the_embedding_causally(tiny_embed_model):
    ds, model = tiny_embed_model
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    assert sender.codec.embedding is not None
    clip = sender.read_features(ds / "features.npz")
    code = sender.to_code(clip.features)  # (N, C) each frame from its causal window
    assert clip.features.shape == (30, 79) and code.shape == (30, 8)
    coder = sender.codec.causal_coder()
    np.testing.assert_allclose(np.stack([coder(f) for f in clip.features]), code, atol=1e-5)
    enc, dec = sender.stream_encoder(25.0), receiver.packet_decoder()
    assert dec.read_header(enc.header()).code_dim == 8  # the code is what is sent
    for f, p in zip(clip.features, clip.pose):
        got = dec.decode(enc.encode(f, p))
        assert got.code.shape == (8,) and got.expression.shape == (79,)
        rec = enc.last_reconstruction  # in the NeRF's space, as the receiver decodes it
        assert rec is not None
        np.testing.assert_array_equal(got.expression, rec[0])
        np.testing.assert_array_equal(got.pose, rec[1])
