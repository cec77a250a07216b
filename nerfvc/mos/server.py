"""``nerfvc mos serve``: the rating pages of one test (aiohttp), every vote stored at once.

Routes (``TOKEN`` is a rater's secret; anything else is refused with 403):

- ``GET /r/TOKEN``: the training page until the rater has started, then the next unanswered trial of the
  rater's order (so a reload or a new browser resumes where they left), then a thank-you page;
- ``POST /r/TOKEN/start``: leave the training page;
- ``POST /r/TOKEN/vote`` (form ``trial`` + ``score`` 1-5 or ``choice`` A/B): 303 back to ``/r/TOKEN`` once
  stored; 400 for an unknown trial or a malformed vote, 409 for a second vote on a trial or a vote on a
  trial that is not the rater's current one (or before the training page);
- ``GET /r/TOKEN/v/ID.mp4``: a stimulus (HTTP range requests, as browsers use for video).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from nerfvc.errors import InputError
from nerfvc.mos import pages
from nerfvc.mos.manifest import ACR_SCALE, load
from nerfvc.mos.store import DuplicateVote, VoteStore

log = logging.getLogger(__name__)


class MosServer:
    """Serves one test directory to its first ``raters`` raters (default: all planned by the build)."""

    def __init__(self, test_dir: str | Path, raters: int | None = None) -> None:
        self.dir = Path(test_dir)
        self.manifest = load(self.dir)
        planned = len(self.manifest.raters)
        n = planned if raters is None else raters
        if not 1 <= n <= planned:
            raise InputError(f"--raters must be 1..{planned} (the test was built for {planned} raters)")
        self.store = VoteStore(self.dir)
        self.tokens = self.store.tokens(n)
        self._rater_of = {t: r for r, t in enumerate(self.tokens)}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/r/{token}", self._page)
        app.router.add_post("/r/{token}/start", self._start)
        app.router.add_post("/r/{token}/vote", self._vote)
        app.router.add_get("/r/{token}/v/{sid}.mp4", self._video)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start serving; returns the bound port."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        """Stop serving and close the vote store."""
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()

    def links(self, base: str) -> list[str]:
        """One link per rater under ``base`` (e.g. ``http://192.168.1.20:8000``)."""
        return [f"{base.rstrip('/')}/r/{t}" for t in self.tokens]

    def _rater(self, request: web.Request) -> int:
        r = self._rater_of.get(request.match_info["token"])
        if r is None:
            raise web.HTTPForbidden(text="unknown link: open the link you were sent")
        return r

    def _next(self, rater: int) -> tuple[int, str] | None:
        """``(position, trial id)`` of the rater's first unanswered trial, None when all are answered."""
        done = self.store.answered(rater)
        order = self.manifest.raters[rater].order
        return next(((i, t) for i, t in enumerate(order) if t not in done), None)

    async def _page(self, request: web.Request) -> web.Response:
        r = self._rater(request)
        token, m = request.match_info["token"], self.manifest
        total = len(m.trials)
        if not self.store.trained(r):
            text = pages.training(m, token, total)
        elif (nxt := self._next(r)) is None:
            text = pages.done(total)
        else:
            position, tid = nxt
            t = m.trials[tid]
            ab = t.stimuli if t.kind == "acr" else m.raters[r].stimuli_ab(t)
            text = pages.trial(m, token, t, ab, position, total)
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _start(self, request: web.Request) -> web.Response:
        r = self._rater(request)
        self.store.mark_trained(r)
        raise web.HTTPSeeOther(f"/r/{request.match_info['token']}")

    async def _vote(self, request: web.Request) -> web.Response:
        r = self._rater(request)
        token = request.match_info["token"]
        form = await request.post()
        trial = self.manifest.trials.get(str(form.get("trial", "")))
        if trial is None:
            raise web.HTTPBadRequest(text="unknown trial")
        score = choice = preferred = None
        if trial.kind == "acr":
            if "choice" in form or str(form.get("score")) not in {str(k) for k in ACR_SCALE}:
                raise web.HTTPBadRequest(text="an ACR vote needs score=1..5 and nothing else")
            score = int(str(form["score"]))
        else:
            choice = str(form.get("choice"))
            if "score" in form or choice not in ("A", "B"):
                raise web.HTTPBadRequest(text="a paired-comparison vote needs choice=A or choice=B")
            preferred = self.manifest.raters[r].stimuli_ab(trial)["AB".index(choice)]
        if not self.store.trained(r):
            raise web.HTTPConflict(text="start from the training page: open your link")
        if trial.id in self.store.answered(r):
            raise web.HTTPConflict(text="already voted on this trial; open your link to continue")
        nxt = self._next(r)
        if nxt is None or nxt[1] != trial.id:
            raise web.HTTPConflict(text="not your current trial; open your link to continue")
        try:
            self.store.add(r, trial.id, nxt[0], score=score, choice=choice, preferred=preferred)
        except DuplicateVote:
            raise web.HTTPConflict(text="already voted on this trial; open your link to continue") from None
        log.info("rater %d voted on trial %d", r, nxt[0] + 1)
        raise web.HTTPSeeOther(f"/r/{token}")

    async def _video(self, request: web.Request) -> web.StreamResponse:
        self._rater(request)
        s = self.manifest.stimulus(request.match_info["sid"])
        if s is None:
            raise web.HTTPNotFound(text="no such clip")
        return web.FileResponse(self.dir / s.file, headers={"Content-Type": "video/mp4"})
