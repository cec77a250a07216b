"""The rating server over HTTP: votes stored at once, malformed or replayed votes refused, resumable,
and no vote lost when ``nerfvc mos serve`` is killed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from nerfvc.errors import InputError
from nerfvc.mos import results as R
from nerfvc.mos.manifest import load
from nerfvc.mos.server import MosServer

ROOT = Path(__file__).resolve().parents[2]


def _db_votes(test_dir: Path) -> list[tuple]:
    with sqlite3.connect(test_dir / "votes.sqlite") as db:
        return db.execute("SELECT rater, trial, position, score, choice FROM votes ORDER BY rowid").fetchall()


def _trial(page: str) -> str:
    return re.search(r'data-trial="(\w+)"', page).group(1)


def test_votes_land_at_once_and_bad_ones_are_refused(test_dir):
    m = load(test_dir)
    plan = m.raters[0]
    acr = [t for t in plan.order if m.trials[t].kind == "acr"]
    pair = next(t for t in plan.order if m.trials[t].kind == "pair")

    async def go() -> None:
        server = MosServer(test_dir, raters=2)
        port = await server.start()
        link, other = server.links(f"http://127.0.0.1:{port}")
        try:
            async with aiohttp.ClientSession() as http:

                async def vote(url: str, **form) -> int:
                    async with http.post(f"{url}/vote", data=form, allow_redirects=False) as r:
                        return r.status

                async def page(url: str) -> str:
                    async with http.get(url) as r:
                        assert r.status == 200
                        return await r.text()

                assert 'data-page="training"' in await page(link)
                assert await vote(link, trial=plan.order[0], score="4") == 409  # training page first
                async with http.post(f"{link}/start", allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"].endswith(link.rsplit("/", 1)[1])
                assert _trial(await page(link)) == plan.order[0]
                # malformed: bad token, unknown trial, bad scores, a choice on an ACR trial
                base = link.rsplit("/", 1)[0]
                assert await vote(f"{base}/not-a-token", trial=plan.order[0], score="4") == 403
                async with http.get(f"{base}/not-a-token") as r:
                    assert r.status == 403
                assert await vote(link, trial="nope", score="4") == 400
                for bad in ("0", "6", "4.5", "x", ""):
                    assert await vote(link, trial=plan.order[0], score=bad) == 400
                assert await vote(link, trial=plan.order[0]) == 400
                assert await vote(link, trial=plan.order[0], score="4", choice="A") == 400
                assert await vote(link, trial=plan.order[1], score="4") == 409  # not the current trial
                assert _db_votes(test_dir) == []
                assert await vote(link, trial=plan.order[0], score="4") == 303
                assert _db_votes(test_dir) == [(0, plan.order[0], 0, 4, None)]  # on disk before the reply
                assert await vote(link, trial=plan.order[0], score="5") == 409  # replay
                assert await vote(link, trial=plan.order[0], score="4") == 409
                assert _trial(await page(link)) == plan.order[1]  # reload resumes at the next trial
                for i, t in enumerate(acr[1:], 1):
                    assert await vote(link, trial=t, score=str(1 + i % 5)) == 303
                assert _trial(await page(link)) == pair
                assert 'data-page="pair"' in await page(link)
                assert await vote(link, trial=pair, choice="C") == 400
                assert await vote(link, trial=pair, score="3") == 400
                assert await vote(link, trial=pair, choice="B") == 303
                # the second rater has an independent session; a stimulus is served with range support
                assert 'data-page="training"' in await page(other)
                sid = m.trials[pair].stimuli[0]
                async with http.get(f"{link}/v/{sid}.mp4", headers={"Range": "bytes=0-99"}) as r:
                    assert r.status == 206 and len(await r.read()) == 100
                    assert r.headers["Content-Type"] == "video/mp4"
                async with http.get(f"{link}/v/nothing.mp4") as r:
                    assert r.status == 404
                async with http.get(f"{base}/bad/v/{sid}.mp4") as r:
                    assert r.status == 403
        finally:
            await server.stop()

    asyncio.run(go())
    votes = _db_votes(test_dir)
    assert len(votes) == len(acr) + 1 and votes[-1][4] == "B"
    with sqlite3.connect(test_dir / "votes.sqlite") as db:
        (preferred,) = db.execute("SELECT preferred FROM votes WHERE choice = 'B'").fetchone()
    assert preferred == load(test_dir).raters[0].stimuli_ab(m.trials[pair])[1]
    res = R.compute(test_dir, min_reference=1)  # the stored votes feed the results
    assert res["raters"][0]["votes"] == len(acr) + 1 and res["raters_kept"] == 1
    assert sum(r["n"] for r in res["acr"]) == len(acr) and sum(p["n"] for p in res["preference"]) == 1


def test_raters_beyond_the_plan_are_refused(test_dir):
    with pytest.raises(InputError, match=r"1\.\.4"):
        MosServer(test_dir, raters=5)


def test_cli_serve_prints_stable_links_and_loses_no_vote_when_killed(test_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def serve() -> tuple[subprocess.Popen, list[str]]:
        cmd = [sys.executable, "-m", "nerfvc.cli", "mos", "serve", str(test_dir), "--listen", "127.0.0.1:0"]
        proc = subprocess.Popen([*cmd, "--raters", "2"], stdout=subprocess.PIPE, text=True, env=env)
        header = proc.stdout.readline()
        assert header.startswith(f"serving {test_dir} on 127.0.0.1:"), header
        return proc, [proc.stdout.readline().split(": ", 1)[1].strip() for _ in range(2)]

    async def vote_first(link: str) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{link}/start", allow_redirects=False) as r:
                assert r.status == 303
            async with http.get(link) as r:
                trial = _trial(await r.text())
            form = {"trial": trial, "score": "5"}
            async with http.post(f"{link}/vote", data=form, allow_redirects=False) as r:
                assert r.status == 303

    proc, links = serve()
    try:
        asyncio.run(vote_first(links[0]))
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean shutdown
        proc.wait()
    assert len(_db_votes(test_dir)) == 1
    proc, again = serve()  # the same tokens after a restart; the rater resumes at trial 2
    try:
        assert [u.rsplit("/", 1)[1] for u in again] == [u.rsplit("/", 1)[1] for u in links]

        async def resumed() -> str:
            async with aiohttp.ClientSession() as http, http.get(again[0]) as r:
                return await r.text()

        assert 'data-position="1"' in asyncio.run(resumed())
    finally:
        proc.terminate()
        proc.wait()
