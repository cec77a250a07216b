"""Loopback calls over real aiortc data channels with the stand-in codec (the real codec drops in)."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import numpy as np
import pytest

from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.receiver import Receiver
from nerfvc.live.sender import CallError, Sender, SenderConfig
from nerfvc.live.transport import WIRE_OVERHEAD_BYTES
from tests.live.helpers import run_call
from tests.live.standins import ArraySource, StandInDecoder, StandInEncoder

pytestmark = pytest.mark.realtime  # real-time calls: `make test` runs these alone, after the rest


def _equal_features(report, rx) -> int:
    """Number of delivered (not concealed) frames; asserts each equals the sender's quantized features."""
    n = 0
    for i, (code, pose, concealed) in rx.features.items():
        if concealed:
            continue
        q_code, q_pose = report.quantized[i]
        np.testing.assert_array_equal(code, q_code, err_msg=f"frame {i} code")
        np.testing.assert_array_equal(pose, q_pose, err_msg=f"frame {i} pose")
        n += 1
    return n


def test_five_second_call_delivers_frames_and_exact_features(clip):
    report, rx, _ = asyncio.run(run_call(clip))
    n = len(clip[1])
    assert report.frames == n == 125
    assert _equal_features(report, rx) >= 0.95 * n
    s = rx.summary()
    assert s["delivered"] >= 0.95 * n and s["lost"] == 0
    assert rx.frames_rendered > 0.5 * n  # latest-wins rendering may skip frames, never stalls
    assert s["latency_p50_ms"] is not None and s["latency_p50_ms"] > 0  # measured (speed: benchmarks/live.py)
    summary = report.summary()
    assert report.messages == n
    expected_wire = 8 * (report.payload_bytes + WIRE_OVERHEAD_BYTES * n) / (n / clip[3]) / 1000
    assert summary["wire_kbps"] == pytest.approx(expected_wire, rel=1e-3)
    assert summary["payload_kbps"] < summary["wire_kbps"]


def test_two_render_threads_show_more_frames_and_never_an_older_one(clip):
    shown: dict[int, list[int]] = {}
    half = (clip[0][:75], clip[1][:75], clip[2][:75], clip[3])  # 2.5 s of the call say it
    for threads in (1, 2):
        rx = Receiver(StandInDecoder, DebugDiscRenderer(delay=0.07), size=64, render_threads=threads)
        publish = rx._publish
        order = shown.setdefault(threads, [])

        def record(panel, jpeg, meta, publish=publish, order=order):
            if "i" in meta:
                order.append(meta["i"])
            publish(panel, jpeg, meta)

        rx._publish = record
        asyncio.run(run_call(half, receiver=rx))
        asyncio.run(rx.stop())
    for order in shown.values():
        assert order == sorted(set(order))  # strictly increasing
    assert len(shown[2]) > 1.4 * len(shown[1]), {k: len(v) for k, v in shown.items()}


def test_packing_several_frames_per_message(clip):
    short = (clip[0][:50], clip[1][:50], clip[2][:50], clip[3])
    report, rx, _ = asyncio.run(run_call(short, pack=4))
    assert report.messages == 13  # ceil(50 / 4)
    assert _equal_features(report, rx) >= 48
    assert report.summary()["wire_kbps"] < 8 * (report.payload_bytes + 67 * 50) / 2 / 1000


def test_five_percent_loss_call_continues_and_recovers_at_keyframes(clip):
    report, rx, enc = asyncio.run(run_call(clip, drop=0.05, seed=7))
    n = len(clip[1])
    assert report.dropped_messages >= 3  # the loss really happened
    s = rx.summary()
    assert s["lost"] >= 1 and s["keyframe_requests"] >= 1 and report.keyframe_requests >= 1
    delivered = _equal_features(report, rx)  # every decoded frame is still exact
    assert delivered >= 0.8 * n
    # Every run of concealed frames ends at a keyframe (recovery), and the call ran to the end.
    indices = sorted(rx.features)
    for a, b in itertools.pairwise(indices):
        if rx.features[a][2] and not rx.features[b][2]:
            assert b in enc.key_indices, f"frame {b} recovered without a keyframe"
    assert max(indices) >= n - 3
    assert rx.frames_rendered > 0.5 * n


def test_wrong_or_missing_token_is_refused_and_no_peer_is_created(clip):
    async def go():
        rx = Receiver(StandInDecoder, DebugDiscRenderer(), size=64)
        port = await rx.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as s:
                offer = {"sdp": "v=0", "type": "offer"}
                for body in (offer, {**offer, "token": "nope"}, {**offer, "token": rx.token[:-1]}):
                    async with s.post(base + "/offer", json=body) as r:
                        assert r.status == 403
                for path in ("/", "/ws", "/stats", "/?token=bad"):
                    async with s.get(base + path) as r:
                        assert r.status == 403, path
                async with s.get(base + f"/?token={rx.token}") as r:
                    assert r.status == 200 and "nerfvc" in await r.text()
            assert not rx.pcs and rx.call is None
            code, pose = clip[1][:5], clip[2][:5]
            sender = Sender(ArraySource(code, pose, 25.0), StandInEncoder(16), SenderConfig(base, "wrong"))
            with pytest.raises(CallError, match="refused the token"):
                await sender.run()
            assert not rx.pcs and rx.call is None
        finally:
            await rx.stop()

    asyncio.run(go())


def test_unreachable_receiver_is_a_clear_error():
    code = np.zeros((3, 4), np.float32)
    pose = np.zeros((3, 12), np.float32)
    sender = Sender(ArraySource(code, pose, 25.0), StandInEncoder(4), SenderConfig("http://127.0.0.1:9", "t"))
    with pytest.raises(CallError, match="cannot reach"):
        asyncio.run(sender.run())


def test_lossy_start_recovers_with_a_requested_keyframe(clip, monkeypatch):
    """The first 5 messages (the initial keyframe among them) are lost: the receiver asks, decoding starts."""
    from nerfvc.live import transport

    original = transport.LossyChannel.send

    def drop_first(self, data: bytes) -> None:
        if self.sent + self.dropped < 5:
            self.dropped += 1
            return
        original(self, data)

    monkeypatch.setattr(transport.LossyChannel, "send", drop_first)
    short = (clip[0][:50], clip[1][:50], clip[2][:50], clip[3])
    report, rx, enc = asyncio.run(run_call(short))
    assert report.dropped_messages == 5 and 0 not in rx.features
    assert report.keyframe_requests >= 1 and len(enc.key_indices) >= 2
    first_ok = min(i for i, v in rx.features.items() if not v[2])
    assert first_ok in enc.key_indices and first_ok < 15
    assert _equal_features(report, rx) >= 50 - first_ok


def test_stream_for_another_model_is_refused_and_reported_to_the_sender(clip):
    async def go():
        rx = Receiver(lambda: StandInDecoder("fedcba9876543210"), DebugDiscRenderer(), size=64)
        port = await rx.start()
        try:
            code, pose = clip[1][:50], clip[2][:50]
            cfg = SenderConfig(f"http://127.0.0.1:{port}", rx.token)
            with pytest.raises(CallError, match="refused the stream: not a stand-in stream for this model"):
                await Sender(ArraySource(code, pose, 25.0), StandInEncoder(16), cfg).run()
            assert rx.call is not None and not rx.call.has_header and rx.call.decoded == 0
        finally:
            await rx.stop()

    asyncio.run(go())


def test_rates_are_per_second_of_the_media_covered_not_of_the_frames_sent():
    """A sender that skipped frames (late) or sends every m-th one covers more media than it sent frames:
    the rate is bytes over the camera frames' duration (before, 60% skipped frames overstated it 2.5×)."""
    from nerfvc.live.sender import SenderReport

    report = SenderReport(frames=10, payload_bytes=100, fps=25.0, camera_frames=30)
    assert report.summary()["payload_kbps"] == pytest.approx(8 * 100 / (30 / 25.0) / 1000, abs=1e-3)
    assert report.summary()["bits_per_frame"] == 80.0  # per frame sent
    assert SenderReport(frames=10, payload_bytes=100, fps=25.0).summary()["payload_kbps"] == 2.0
