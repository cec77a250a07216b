"""The viewer page in headless Chromium (Debian ``chromium``, driven over CDP): frames, stats, size change."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.receiver import Receiver
from tests.live.cdp import Browser, find_chromium
from tests.live.helpers import run_call
from tests.live.standins import StandInDecoder

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium) — viewer test skipped"
    ),
    pytest.mark.realtime,  # a real-time call: `make test` runs these alone, after the rest
]


def _crop_variance(png: Path, rect: dict) -> float:
    img = np.asarray(Image.open(png).convert("RGB"), np.float64)
    x, y, w, h = (round(rect[k]) for k in ("x", "y", "width", "height"))
    return float(img[y : y + h, x : x + w].var())


def test_viewer_shows_frames_stats_and_changes_size_live(clip, tmp_path):
    async def go():
        rx = Receiver(StandInDecoder, DebugDiscRenderer(), size=256, record=True)
        port = await rx.start()
        try:
            async with Browser(CHROMIUM) as browser:
                await browser.goto(f"http://127.0.0.1:{port}/?token={rx.token}")
                await browser.wait_for("document.getElementById('status').textContent === 'connected'")
                call = asyncio.create_task(run_call(clip, receiver=rx, classic="x265"))
                await browser.wait_for("window.nerfvcFramesShown[0] > 15 && window.nerfvcFramesShown[1] > 15")
                # Size selector: 128 → the receiver renders 128×128 and the canvas follows.
                await browser.eval(
                    "(() => { const s = document.getElementById('size-select'); s.value = '128';"
                    " s.dispatchEvent(new Event('change')); return true; })()"
                )
                await browser.wait_for("document.getElementById('nerfvc').width === 128", timeout=10)
                assert rx.size == 128
                await browser.wait_for("Number(document.getElementById('payload_kbps').textContent) > 0")
                await browser.wait_for("document.getElementById('latency_ms').textContent !== '–'")
                await browser.wait_for("document.getElementById('display_latency_ms').textContent !== '–'")
                shot = await browser.screenshot(tmp_path / "viewer.png")
                stats = await browser.eval(
                    "Object.fromEntries([...document.querySelectorAll('#stats td.v')]"
                    ".map(e => [e.id, e.textContent]))"
                )
                rects = await browser.eval(
                    "Object.fromEntries(['nerfvc', 'classic'].map(id => { const r ="
                    " document.getElementById(id).getBoundingClientRect();"
                    " return [id, {x: r.x, y: r.y, width: r.width, height: r.height}]; }))"
                )
                await call
        finally:
            await rx.stop()
        return shot, stats, rects

    shot, stats, rects = asyncio.run(go())
    keep = os.environ.get("NERFVC_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    for panel in ("nerfvc", "classic"):
        assert _crop_variance(shot, rects[panel]) > 100, f"{panel} panel looks blank"
    assert float(stats["payload_kbps"]) > 0
    assert float(stats["wire_kbps"]) > float(stats["payload_kbps"])
    assert float(stats["render_fps"]) > 0 and float(stats["latency_ms"]) > 0  # shown; speed is benchmarked
    assert stats["lost"] == "0"
    assert float(stats["classic_kbps"]) > 0
