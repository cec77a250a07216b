"""The votes of a test: ``TEST/votes.sqlite``, one row per vote, committed as it arrives.

WAL journal with ``synchronous=FULL`` and autocommit: a vote is on disk before the rater's next page is
served, so killing the server loses nothing. ``UNIQUE(rater, trial)`` makes a second vote on a trial fail
(:class:`DuplicateVote`) whatever the pages do. Rater tokens live here too, so links survive a restart.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from nerfvc.mos.manifest import VOTES

SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    rater INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    trained REAL
);
CREATE TABLE IF NOT EXISTS votes (
    rater INTEGER NOT NULL REFERENCES raters(rater),
    trial TEXT NOT NULL,
    position INTEGER NOT NULL,
    score INTEGER CHECK (score BETWEEN 1 AND 5),
    choice TEXT CHECK (choice IN ('A', 'B')),
    preferred TEXT,
    created REAL NOT NULL,
    UNIQUE (rater, trial),
    CHECK ((score IS NULL) != (choice IS NULL))
);
"""


class DuplicateVote(Exception):
    """The rater has already voted on this trial."""


@dataclass(frozen=True)
class Vote:
    """One stored vote: an ACR ``score`` (1-5) or a pair ``choice`` ("A"/"B") and the ``preferred``
    stimulus id it resolves to."""

    rater: int
    trial: str
    position: int
    score: int | None
    choice: str | None
    preferred: str | None
    created: float


class VoteStore:
    """The SQLite file of one test (one connection; the server is single-threaded)."""

    def __init__(self, test_dir: str | Path) -> None:
        self.path = Path(test_dir) / VOTES
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def tokens(self, raters: int) -> list[str]:
        """The tokens of raters ``0..raters-1``, creating the missing ones."""
        have = dict(self.db.execute("SELECT rater, token FROM raters WHERE rater < ?", (raters,)))
        for r in range(raters):
            if r not in have:
                have[r] = secrets.token_urlsafe(16)
                self.db.execute(
                    "INSERT INTO raters (rater, token, created) VALUES (?, ?, ?)", (r, have[r], time.time())
                )
        return [have[r] for r in range(raters)]

    def rater(self, token: str) -> int | None:
        """The rater holding ``token`` (None if unknown)."""
        row = self.db.execute("SELECT rater FROM raters WHERE token = ?", (token,)).fetchone()
        return None if row is None else int(row[0])

    def trained(self, rater: int) -> bool:
        """Whether the rater has gone through the training page."""
        row = self.db.execute("SELECT trained FROM raters WHERE rater = ?", (rater,)).fetchone()
        return row is not None and row[0] is not None

    def mark_trained(self, rater: int) -> None:
        """Record that the rater finished the training page (the first time only)."""
        self.db.execute(
            "UPDATE raters SET trained = ? WHERE rater = ? AND trained IS NULL", (time.time(), rater)
        )

    def answered(self, rater: int) -> set[str]:
        """Trial ids the rater has voted on."""
        return {t for (t,) in self.db.execute("SELECT trial FROM votes WHERE rater = ?", (rater,))}

    def add(
        self,
        rater: int,
        trial: str,
        position: int,
        *,
        score: int | None = None,
        choice: str | None = None,
        preferred: str | None = None,
    ) -> None:
        """Store one vote (committed on return); :class:`DuplicateVote` if the rater voted on ``trial``."""
        try:
            self.db.execute(
                "INSERT INTO votes (rater, trial, position, score, choice, preferred, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rater, trial, position, score, choice, preferred, time.time()),
            )
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise DuplicateVote(f"rater {rater} already voted on trial {trial}") from None
            raise

    def votes(self) -> list[Vote]:
        """Every vote, in the order stored."""
        rows = self.db.execute(
            "SELECT rater, trial, position, score, choice, preferred, created FROM votes ORDER BY rowid"
        )
        return [Vote(*r) for r in rows]
