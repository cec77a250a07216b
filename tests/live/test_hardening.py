"""No message can end a live call: malformed control messages, the viewer's token, bad offers mid-call."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.receiver import CallState, Receiver, parse_control
from nerfvc.live.sender import CallError, Sender, SenderConfig
from tests.live.helpers import run_call
from tests.live.standins import ArraySource, StandInDecoder, StandInEncoder

pytestmark = pytest.mark.realtime  # real-time calls: `make test` runs these alone, after the rest

# The malformed messages that used to escape into aiortc's DTLS loop (and some more).
MALFORMED = [
    "[1, 2]",
    "42",
    "null",
    '"hello"',
    "{not json",
    json.dumps({"type": 5}),
    json.dumps({"type": "hello", "header": "AAAA", "pack": "abc"}),
    json.dumps({"type": "hello", "header": "AAAA", "classic": "foo"}),
    json.dumps({"type": "hello", "header": "AAAA", "fps": "fast"}),
    json.dumps({"type": "hello", "header": 7}),
    json.dumps({"type": "hello"}),
    json.dumps({"type": "mark", "i": ["x"], "t": [1.0]}),
    json.dumps({"type": "mark", "i": 3, "t": 1.0}),
    json.dumps({"type": "mark", "i": [1, 2], "t": [1.0]}),
    json.dumps({"type": "mark", "i": [1], "t": [None]}),
    json.dumps({"type": "pong", "ts": 1.0}),
    json.dumps({"type": "pong", "t0": "x", "ts": 1.0}),
    json.dumps({"type": "pong", "t0": 1e400, "ts": 1.0}).replace("Infinity", "1e400"),
    json.dumps({"type": "shutdown"}),
    "x" * 70_000,
]


@pytest.mark.parametrize("message", MALFORMED)
def test_malformed_control_message_is_counted_and_ignored(message):
    with pytest.raises(ValueError):
        parse_control(message)
    rx = Receiver(StandInDecoder, DebugDiscRenderer(), size=64)
    call = CallState(decoder=StandInDecoder())
    rx._on_control(call, message)  # must not raise (it would end the call)
    assert call.bad_control == 1 and not call.ended and not call.has_header


def test_well_formed_control_messages_parse():
    for msg in (
        {"type": "hello", "header": "AAAA", "fps": 29.97, "pack": 4, "classic": None},
        {"type": "hello", "header": "AAAA", "classic": "x265"},
        {"type": "mark", "i": [0, 5], "t": [1.5, 1.7]},
        {"type": "pong", "t0": 1.0, "ts": 2},
        {"type": "bye", "frames": 10},
    ):
        assert parse_control(json.dumps(msg)) == msg


def test_call_survives_malformed_control_messages(clip, monkeypatch):
    """The sender interleaves every malformed message with its media: the call runs to the end."""
    original = Sender._flush
    junk = list(MALFORMED)

    def flush_with_junk(self, media, control, *rest):
        original(self, media, control, *rest)
        if junk:
            control.send(junk.pop())

    monkeypatch.setattr(Sender, "_flush", flush_with_junk)
    short = (clip[0][:60], clip[1][:60], clip[2][:60], clip[3])
    report, rx, _ = asyncio.run(run_call(short))
    s = rx.summary()
    assert not junk and s["bad_control"] == len(MALFORMED)
    assert report.frames == 60 and s["delivered"] >= 0.95 * 60 and s["lost"] == 0


def test_viewer_token_cannot_offer_and_token_is_checked_before_the_body():
    async def go():
        rx = Receiver(StandInDecoder, DebugDiscRenderer(), size=64)
        port = await rx.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as s:
                for token in (rx.view_token, "", rx.token + "x"):
                    headers = {"Authorization": f"Bearer {token}"}
                    async with s.post(base + "/offer", data=b"not json", headers=headers) as r:
                        assert r.status == 403  # refused before the body is parsed
                for path in ("/", "/stats"):
                    async with s.get(base + f"{path}?token={rx.view_token}") as r:
                        assert r.status == 200, path
            assert not rx.pcs and rx.call is None
            sender = Sender(
                ArraySource(*_features(5), 25.0), StandInEncoder(16), SenderConfig(base, rx.view_token)
            )
            with pytest.raises(CallError, match="refused the token"):
                await sender.run()
            assert not rx.pcs and rx.call is None
        finally:
            await rx.stop()

    asyncio.run(go())


def _features(n):
    import numpy as np

    return np.zeros((n, 16), np.float32), np.tile(np.eye(3, 4).reshape(1, 12), (n, 1)).astype(np.float32)


def test_bad_offer_does_not_end_the_running_call(clip):
    async def go():
        rx = Receiver(StandInDecoder, DebugDiscRenderer(), size=64, record=True)
        await rx.start()
        try:
            short = (clip[0][:75], clip[1][:75], clip[2][:75], clip[3])
            call = asyncio.create_task(run_call(short, receiver=rx))
            while rx.call is None or rx.call.decoded < 10:
                await asyncio.sleep(0.05)
            running, pcs = rx.call, set(rx.pcs)
            headers = {"Authorization": f"Bearer {rx.token}"}
            async with aiohttp.ClientSession() as s:
                for sdp in ("garbage", "", "v=0\r\n"):
                    body = {"type": "offer", "sdp": sdp}
                    async with s.post(f"http://127.0.0.1:{rx.port}/offer", json=body, headers=headers) as r:
                        assert r.status == 400
            assert rx.call is running and rx.pcs == pcs and not running.ended
            report, _, _ = await call
            return report, rx.summary()
        finally:
            await rx.stop()

    report, s = asyncio.run(go())
    assert report.frames == 75 and s["delivered"] >= 0.95 * 75 and s["lost"] == 0
