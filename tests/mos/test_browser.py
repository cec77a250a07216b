"""A scripted rater in headless Chromium (Debian ``chromium`` over CDP) completes a short session: the pages
load, the clips play to their end before the vote opens, votes land in SQLite, a reload resumes."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from nerfvc.mos.build import build_test
from nerfvc.mos.manifest import load
from nerfvc.mos.server import MosServer
from tests.live.cdp import Browser, find_chromium

from .conftest import fake_eval

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium) — scripted rater skipped"
)
H264 = "document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.640028\"')"


async def _settle(browser: Browser, expression: str) -> object:
    """Poll ``expression`` across a page navigation (the old page's context disappears mid-poll)."""
    for _ in range(1200):  # a hang guard, not a speed requirement
        try:
            value = await browser.eval(expression)
        except RuntimeError:  # the page navigated away under the evaluation
            value = None
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"page never reached: {expression}")


async def reload(browser: Browser) -> None:
    """Reload the page; ``window.stale`` tells the old page from the new one."""
    await browser.eval("window.stale = true")
    await browser.send("Page.reload")


def test_scripted_rater_completes_a_session(tmp_path):
    report = fake_eval(tmp_path, "clip", nerfvc=(1.0,), codecs={"x265": (6.0,)}, n=4)
    build_test([report], tmp_path / "test", seconds=0.12, raters=2, seed=5)
    m = load(tmp_path / "test")
    order = m.raters[0].order
    assert [m.trials[t].kind for t in order] == ["acr", "acr", "acr", "pair"]

    def stored() -> list[tuple]:
        with sqlite3.connect(tmp_path / "test" / "votes.sqlite") as db:
            return db.execute("SELECT trial, position, score, choice FROM votes ORDER BY rowid").fetchall()

    async def go() -> list[str]:
        server = MosServer(tmp_path / "test")
        port = await server.start()
        link = server.links(f"http://127.0.0.1:{port}")[0]
        seen = []
        try:
            async with Browser(CHROMIUM) as browser:
                await browser.goto(link)
                if await browser.eval(H264) == "":
                    pytest.skip("this Chromium build cannot play H.264 (the stimuli's codec)")
                assert await _settle(browser, "document.body.dataset.page") == "training"
                loaded = "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)"
                await _settle(browser, loaded)  # the training page's anchor clips load
                await browser.eval("document.getElementById('start').click()")
                for i, tid in enumerate(order):
                    ready = f"document.body.dataset.position === '{i}' && document.body.dataset.ready === '1'"
                    await _settle(browser, ready)  # every clip of the trial played to its end
                    seen.append(await browser.eval("document.body.dataset.trial"))
                    assert await browser.eval("document.body.dataset.error") is None
                    if i == 2:  # reload before voting: the same trial again; then vote
                        await reload(browser)
                        await _settle(browser, f"!window.stale && {ready}")
                        assert await browser.eval("document.body.dataset.trial") == tid
                    kind = await browser.eval("document.body.dataset.page")
                    button = "button[value='4']" if kind == "acr" else "button[value='A']"
                    await browser.eval(f'document.querySelector("{button}").click()')
                    following = f"document.body.dataset.position === '{i + 1}'"
                    await _settle(browser, following)
                    assert len(stored()) == i + 1  # the vote is on disk when the next page shows
                    if i == 1:  # reload after a vote: resumes at the next trial
                        await reload(browser)
                        await _settle(browser, f"!window.stale && {following}")
                assert await _settle(browser, "document.body.dataset.page") == "done"
        finally:
            await server.stop()
        return seen

    seen = asyncio.run(go())
    assert seen == list(order)
    votes = stored()
    assert [v[0] for v in votes] == list(order) and [v[1] for v in votes] == [0, 1, 2, 3]
    assert [v[2] for v in votes] == [4, 4, 4, None] and votes[3][3] == "A"
