"""``TEST/test.json``: what a subjective test shows (stimuli, trials) and in which order each rater sees it.

This module owns the file's format: ``nerfvc mos build`` writes it (:func:`save`), ``serve`` and ``results``
read it (:func:`load`). Paths inside are relative to the test directory; ids are random (blinded: a file
name or a trial id says nothing about the system behind it).

The trial order of each rater (:func:`plan_raters`): every ACR trial, then every paired comparison; each
block ordered by a row of a Williams design over a seeded random permutation of its trials, so over
``n`` raters (``2n`` for an odd number of trials) every trial appears once at every position and (even
``n``) follows every other trial once. The rows are dealt to raters in a seeded random order. In pair
``j`` rater ``r`` sees nerfvc second (B) when ``r + j`` is odd: an even number of raters sees each pair
equally often in both orders.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from nerfvc.errors import InputError
from nerfvc.fsutil import read_json, write_json_atomic

FORMAT = "nerfvc-mos/1"
MANIFEST = "test.json"
VOTES = "votes.sqlite"
ACR_SCALE = {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"}  # ITU-T P.910 ACR labels
REFERENCE = "reference"  # the system name of the hidden reference (the ground truth)


@dataclass(frozen=True)
class Source:
    """One ``nerfvc eval`` report: its clip and the frames of the test split that the stimuli show."""

    id: str
    eval_dir: str
    video: str
    first_frame: int  # within the kept test-split videos
    frames: int
    fps: float


@dataclass(frozen=True)
class Stimulus:
    """One clip shown to raters. ``roles``: ``reference``, ``nerfvc``, ``matched`` (the codec point
    closest in rate to a nerfvc point), ``lowest`` (the codec's lowest rate), ``training``."""

    id: str
    file: str
    source: str
    system: str
    label: str
    kbps: float | None
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Trial:
    """``acr``: one stimulus rated 1-5. ``pair``: ``(nerfvc, other)`` stimuli, which one looked better."""

    id: str
    kind: str
    stimuli: tuple[str, ...]
    role: str = ""  # pair: "matched", "lowest" or both


@dataclass(frozen=True)
class RaterPlan:
    """The trial order of one rater and the pair trials where nerfvc is shown second (B)."""

    order: tuple[str, ...]
    nerfvc_second: frozenset[str]

    def stimuli_ab(self, trial: Trial) -> tuple[str, str]:
        """``(A, B)`` stimulus ids of a pair trial as this rater sees them."""
        ours, other = trial.stimuli
        return (other, ours) if trial.id in self.nerfvc_second else (ours, other)


@dataclass(frozen=True)
class Manifest:
    """A whole test as written in ``test.json``."""

    seed: int
    size: int
    seconds: float
    sources: tuple[Source, ...]
    stimuli: dict[str, Stimulus]
    trials: dict[str, Trial]
    training: tuple[Stimulus, ...]  # anchors shown on the training page (best and most impaired)
    raters: tuple[RaterPlan, ...]

    def stimulus(self, sid: str) -> Stimulus | None:
        """A test or training stimulus by id."""
        return self.stimuli.get(sid) or next((s for s in self.training if s.id == sid), None)


def williams_rows(n: int) -> list[list[int]]:
    """Rows of a Williams design for ``n`` items (``n`` rows for even ``n``, ``2n`` for odd)."""
    first, lo, hi = [0], 1, n - 1
    while len(first) < n:
        first.append(lo if len(first) % 2 else hi)
        lo, hi = (lo + 1, hi) if len(first) % 2 == 0 else (lo, hi - 1)
    rows = [[(x + i) % n for x in first] for i in range(n)]
    return rows + [r[::-1] for r in rows] if n % 2 else rows


def _block_orders(trials: list[str], raters: int, rng: random.Random) -> list[list[str]]:
    if not trials:
        return [[] for _ in range(raters)]
    base = trials[:]
    rng.shuffle(base)
    rows = williams_rows(len(base))
    deal = list(range(len(rows)))
    rng.shuffle(deal)
    return [[base[i] for i in rows[deal[r % len(rows)]]] for r in range(raters)]


def plan_raters(trials: dict[str, Trial], raters: int, seed: int) -> tuple[RaterPlan, ...]:
    """Each rater's order: the ACR block then the pair block, balanced as the module docstring says."""
    rng = random.Random(seed)
    acr = [t.id for t in trials.values() if t.kind == "acr"]
    pairs = [t.id for t in trials.values() if t.kind == "pair"]
    acr_orders, pair_orders = _block_orders(acr, raters, rng), _block_orders(pairs, raters, rng)
    return tuple(
        RaterPlan(
            tuple(acr_orders[r] + pair_orders[r]),
            frozenset(t for j, t in enumerate(pairs) if (r + j) % 2),
        )
        for r in range(raters)
    )


def save(test_dir: str | Path, m: Manifest) -> None:
    """Write ``test_dir/test.json`` atomically."""
    write_json_atomic(
        Path(test_dir) / MANIFEST,
        {
            "format": FORMAT,
            "seed": m.seed,
            "size": m.size,
            "seconds": m.seconds,
            "sources": [asdict(s) for s in m.sources],
            "stimuli": [asdict(s) for s in m.stimuli.values()],
            "trials": [asdict(t) for t in m.trials.values()],
            "training": [asdict(s) for s in m.training],
            "raters": [{"order": list(p.order), "nerfvc_second": sorted(p.nerfvc_second)} for p in m.raters],
        },
    )


def _stimulus(d: dict) -> Stimulus:
    return Stimulus(**{**d, "roles": tuple(d["roles"])})


def load(test_dir: str | Path) -> Manifest:
    """Read ``test_dir/test.json``; :class:`InputError` when it is missing or not a test of this format."""
    path = Path(test_dir) / MANIFEST
    if not path.is_file():
        raise InputError(
            f"{test_dir}: not a test directory (no {MANIFEST}; build one with `nerfvc mos build`)"
        )
    d = read_json(path)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} manifest")
    try:
        stimuli = {s["id"]: _stimulus(s) for s in d["stimuli"]}
        trials = {t["id"]: Trial(**{**t, "stimuli": tuple(t["stimuli"])}) for t in d["trials"]}
        m = Manifest(
            int(d["seed"]),
            int(d["size"]),
            float(d["seconds"]),
            tuple(Source(**s) for s in d["sources"]),
            stimuli,
            trials,
            tuple(_stimulus(s) for s in d["training"]),
            tuple(RaterPlan(tuple(p["order"]), frozenset(p["nerfvc_second"])) for p in d["raters"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed manifest ({e!r})") from None
    for p in m.raters:
        if sorted(p.order) != sorted(trials):
            raise InputError(f"{path}: a rater's order does not list every trial once")
    for t in trials.values():
        if any(s not in stimuli for s in t.stimuli):
            raise InputError(f"{path}: trial {t.id} names an unknown stimulus")
    return m
