"""Loopback calls with the real codec, through the MODEL's sender and receiver pipelines.

Without loss every delivered frame's features equal the sender's quantized features; with 5% loss every
decoded frame is still exact and decoding recovers at keyframes. With an expression embedding the
embedding's code crosses the channel and the receiver renders the expression expanded from it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from nerfvc.codec import fit_codec
from nerfvc.codec.synthetic import synthetic_features
from nerfvc.codec.tables import CODEC_FILE
from nerfvc.datasetdir import frame_path
from nerfvc.embed.train import expansion_matrix
from nerfvc.features import upsample_features
from nerfvc.guard.fallback import GuardConfig
from nerfvc.live.guard import LiveGuard
from nerfvc.live.interfaces import DebugDiscRenderer, FrameRenderer
from nerfvc.live.receiver import Receiver
from nerfvc.live.sender import Sender, SenderConfig, SenderReport
from nerfvc.modeldir import finalize_model_dir
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline
from nerfvc.train.dataset import load_rgb
from tests.live.standins import ArraySource

pytestmark = pytest.mark.realtime  # real-time calls: `make test` runs these alone, after the rest


def _call(
    sender: SenderPipeline,
    receiver: ReceiverPipeline,
    features: np.ndarray,
    pose: np.ndarray,
    renderer: FrameRenderer,
    size: int = 64,
    crops: list[np.ndarray] | None = None,
    guard: GuardConfig | None = None,
    frame_step: int = 1,
    shown: list[int] | None = None,
    **config,
) -> tuple[SenderReport, Receiver]:
    """One loopback call of ``features (N, D)``, ``pose (N, 12)`` at 25 fps (every ``frame_step``-th frame
    sent); both ends record features, ``shown`` collects the camera frame index of each frame shown.
    With ``guard``, the sender runs the quality guard on ``crops`` with the model's own renderer."""

    async def go():
        rx = Receiver(receiver.packet_decoder, renderer, size=size, record=True)
        if shown is not None:
            publish = rx._publish

            def record(panel, jpeg, meta):
                shown.append(meta["i"])
                publish(panel, jpeg, meta)

            rx._publish = record
        port = await rx.start()
        try:
            enc = sender.stream_encoder(25.0, frame_step=frame_step)
            cfg = SenderConfig(f"http://127.0.0.1:{port}", rx.token, record=True, **config)
            live_guard = LiveGuard(enc, receiver.renderer(), 25.0, guard) if guard else None
            source = ArraySource(features, pose, 25.0, crops=crops, frame_step=frame_step)
            report = await Sender(source, enc, cfg, guard=live_guard).run()
            await asyncio.sleep(0.3)
            deadline = asyncio.get_running_loop().time() + 30
            while rx.busy and asyncio.get_running_loop().time() < deadline:  # a frame still rendering
                await asyncio.sleep(0.05)
        finally:
            await rx.stop()
        return report, rx

    return asyncio.run(go())


def _codec_model(tmp_path, code: np.ndarray, pose: np.ndarray) -> tuple[SenderPipeline, ReceiverPipeline]:
    """Both pipelines of a MODEL with codec tables fitted on ``code``, ``pose`` and a stand-in NeRF file."""
    model = tmp_path / "model"
    model.mkdir()
    fit_codec(code, pose).save(model / CODEC_FILE)
    (model / "nerf.safetensors").write_bytes(b"stand-in")
    finalize_model_dir(model)
    return SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)


class RecordingRenderer(DebugDiscRenderer):
    """A debug renderer that keeps the features of every frame it renders."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[tuple[np.ndarray, np.ndarray]] = []

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        self.rendered.append((np.array(expression), np.array(pose)))
        return super().render(expression, pose, width, height)


@pytest.mark.parametrize("drop", [0.0, 0.05])
def test_call_with_the_real_codec(drop, tmp_path):
    code, pose = synthetic_features(425, dim=30, seed=1)
    sender, receiver = _codec_model(tmp_path, code[:300], pose[:300])
    report, rx = _call(sender, receiver, code[300:], pose[300:], DebugDiscRenderer(), drop=drop, seed=3)
    delivered = 0
    for i, (c, p, concealed) in rx.features.items():
        if not concealed:
            np.testing.assert_array_equal(c, report.quantized[i][0])
            np.testing.assert_array_equal(p, report.quantized[i][1])
            delivered += 1
    s = rx.summary()
    if drop == 0:
        assert delivered >= 0.95 * 125 and s["lost"] == 0
    else:
        assert report.dropped_messages > 0 and s["keyframe_requests"] > 0
        assert delivered >= 0.75 * 125
        assert max(i for i, v in rx.features.items() if not v[2]) >= 120  # decoding resumed to the end


def test_frames_the_sender_steps_over_are_interpolated_and_shown_in_order(tmp_path):
    """With every 3rd camera frame coded, the receiver also renders the two frames between each pair of
    coded ones, from the features a file decoder would interpolate (``upsample_features``), and shows camera
    frames in increasing order; with ``interpolate`` off it shows the coded frames alone."""
    code, pose = synthetic_features(400, dim=30, seed=2)
    sender, receiver = _codec_model(tmp_path, code[:300], pose[:300])
    renderer, shown = RecordingRenderer(), []
    report, rx = _call(sender, receiver, code[300:390], pose[300:390], renderer, frame_step=3, shown=shown)
    assert report.frames == 30 and rx.summary()["lost"] == 0
    sent = [report.quantized[i] for i in range(30)]  # coded frame i is camera frame 3i
    expected = []  # the frames between coded i - 1 and i, as a file decoder interpolates them
    for i in range(1, 30):
        c, p = upsample_features(
            np.stack([sent[i - 1][0], sent[i][0]]), np.stack([sent[i - 1][1], sent[i][1]]), 3, 4
        )
        expected += [(c[1], p[1]), (c[2], p[2])]
    between = [f for f in renderer.rendered if not any(np.array_equal(f[0], s[0]) for s in sent)]
    assert len(between) == rx.frames_interpolated >= 0.8 * len(expected)  # a late batch may be dropped
    for c, p in between:
        assert any(np.allclose(c, e[0], atol=1e-6) and np.allclose(p, e[1], atol=1e-6) for e in expected)
    assert shown == sorted(set(shown)) and len(shown) > 1.8 * 30
    assert {i for i in shown if i % 3} and all(i <= 87 for i in shown)  # camera indices, the last coded 87

    async def coded_only():
        rx = Receiver(receiver.packet_decoder, DebugDiscRenderer(), size=64, interpolate=False)
        port = await rx.start()
        try:
            enc = sender.stream_encoder(25.0, frame_step=3)
            cfg = SenderConfig(f"http://127.0.0.1:{port}", rx.token)
            await Sender(ArraySource(code[300:345], pose[300:345], 25.0, frame_step=3), enc, cfg).run()
            await asyncio.sleep(0.3)
        finally:
            await rx.stop()
        return rx

    plain = asyncio.run(coded_only())
    assert plain.frames_interpolated == 0 and 0 < plain.frames_rendered <= 15


def test_call_with_an_embedding_model_renders_the_expanded_expression(tiny_embed_model):
    ds, model = tiny_embed_model
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    clip = sender.read_features(ds / "features.npz")
    report, rx = _call(sender, receiver, clip.features, clip.pose, receiver.renderer(), size=32)
    assert report.frames == 30
    # a lossless channel's result: each frame's code (from its causal window) expanded to the expression
    exact = receiver.to_expression(sender.to_code(clip.features))  # (N, E)
    step = receiver.codec.tables.steps(0)[6:]  # (C,) the live encoder's step index; value, output in one bin
    bound = np.abs(expansion_matrix(receiver.codec.embedding)) @ (step + 1e-5) + 1e-5  # (E,)
    delivered = 0
    for i, (expression, pose, concealed) in rx.features.items():
        if concealed:
            continue
        assert expression.shape == (79,)  # the receiver got the expression, not the 8-d code
        np.testing.assert_array_equal(expression, report.quantized[i][0])  # what the sender expected
        np.testing.assert_array_equal(pose, report.quantized[i][1])
        assert np.all(np.abs(expression - exact[i]) <= bound), i  # within the quantization error
        delivered += 1
    assert delivered >= 0.9 * 30
    assert rx.frames_rendered > 0  # the NeRF took the expanded expressions (an 8-d code fails every render)


def test_call_with_the_quality_guard_sends_pictures_the_receiver_composes(tiny_model):
    """The sender's guard renders each coded frame with the (2-step, so poor) model, sends fallback packets
    on the media channel before their frames, and the receiver composes them; features stay exact."""
    ds, model = tiny_model
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    clip = sender.read_features(ds / "features.npz")
    crops = [load_rgb(frame_path(ds, i)) for i in range(len(clip.pose))]
    cfg = GuardConfig(check_size=32, picture_size=64, min_interval=4)
    report, rx = _call(sender, receiver, clip.features, clip.pose, DebugDiscRenderer(), 32, crops, cfg)
    stats = rx.summary()
    assert report.frames == 24 and report.fallback_packets >= 1 and report.fallback_bytes > 0
    assert stats["fallback_packets"] == report.fallback_packets  # a lossless channel delivers them all
    assert stats["frames_in_fallback"] > 0 and stats["corrupt"] == 0  # composed, not taken for damage
    for i, (expression, pose, concealed) in rx.features.items():
        assert not concealed
        np.testing.assert_array_equal(expression, report.quantized[i][0])
        np.testing.assert_array_equal(pose, report.quantized[i][1])
