"""``nerfvc mos build``: a subjective test from ``nerfvc eval --keep-videos`` reports.

For each report (a "source": one clip and its model) at one frame size: the ground truth (hidden
reference), every nerfvc rate point, and for every classic codec its point closest in rate to each nerfvc
point ("matched"; at nerfvc's rates that is usually the codec's floor) and its lowest rate ("lowest"). Each
becomes a short clip of the same segment (the first ``seconds`` of the test split), transcoded to
near-lossless H.264 (CRF 10, yuv420p, MP4 with faststart, what every browser plays) under a random name.
Trials: ACR for every stimulus, and a paired comparison of nerfvc against each codec at the matched and at
the lowest rate (nerfvc's lowest point against the codec's lowest). Two training anchors (the reference
and the lowest-rate codec point of the first source, cut from the end of the test split) are shown before
the test. Everything is built in a temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nerfvc.errors import InputError
from nerfvc.eval.video import ffmpeg_exe
from nerfvc.fsutil import read_json
from nerfvc.mos.manifest import MANIFEST, REFERENCE, Manifest, Source, Stimulus, Trial, plan_raters, save

STIMULUS_CRF = 10  # H.264 CRF of the stimuli: no visible coding loss on top of what is being tested
NOT_TESTED = ("nerfvc", "freeze", "next")  # every other kept system is a classic codec


@dataclass(frozen=True)
class _Point:
    system: str
    label: str
    kbps: float | None
    file: Path

    @property
    def rate(self) -> float:
        """``kbps`` of a coded point (only the reference has none)."""
        if self.kbps is None:
            raise InputError(f"{self.file}: {self.system} {self.label!r} has no bitrate in results.json")
        return self.kbps


@dataclass(frozen=True)
class _Report:
    """The kept videos of one eval report at the test's size."""

    eval_dir: Path
    video: str
    fps: float
    frames: int
    reference: _Point
    nerfvc: list[_Point]
    codecs: dict[str, list[_Point]]


def _kept(eval_dir: Path) -> dict:
    res = read_json(eval_dir / "results.json")
    videos = res.get("videos") if isinstance(res, dict) else None
    if not videos:
        raise InputError(f"{eval_dir}: no kept videos in results.json (run `nerfvc eval ... --keep-videos`)")
    return res


def _report(eval_dir: Path, res: dict, size: int) -> _Report:
    entry = res["videos"].get(str(size))
    if entry is None:
        have = ", ".join(sorted(res["videos"], key=int))
        raise InputError(f"{eval_dir}: no videos kept at {size} px (kept: {have})")

    def point(system: str, label: str, kbps: float | None, rel: str) -> _Point:
        path = eval_dir / rel
        if not path.is_file() or path.stat().st_size == 0:
            raise InputError(f"{eval_dir}: kept video missing or empty: {rel}")
        return _Point(system, label, kbps, path)

    systems = entry.get("systems", {})
    if not systems.get("nerfvc"):
        raise InputError(f"{eval_dir}: no nerfvc video at {size} px (a `nerfvc eval-baselines` report?)")
    codecs = {
        name: sorted((point(name, p["label"], p["kbps"], p["file"]) for p in pts), key=lambda p: p.rate)
        for name, pts in systems.items()
        if name not in NOT_TESTED and pts
    }
    if not codecs:
        raise InputError(f"{eval_dir}: no classic codec video at {size} px to compare nerfvc with")
    if "ground_truth" not in entry:
        raise InputError(f"{eval_dir}: no ground-truth video at {size} px")
    return _Report(
        eval_dir,
        Path(str(res.get("video") or eval_dir.name)).name,
        float(entry["fps"]),
        int(entry["frames"]),
        point(REFERENCE, "ground truth", None, entry["ground_truth"]),
        sorted((point("nerfvc", p["label"], p["kbps"], p["file"]) for p in systems["nerfvc"]),
               key=lambda p: p.rate),
        codecs,
    )  # fmt: skip


def _closest(points: list[_Point], kbps: float) -> _Point:
    """The point closest to ``kbps`` in log rate."""
    return min(points, key=lambda p: abs(math.log(p.rate / kbps)))


def transcode(src: Path, dst: Path, first: int, count: int, fps: float) -> None:
    """Frames ``[first, first + count)`` of ``src`` as a near-lossless browser-playable H.264 MP4."""
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf"]
    cmd += [f"trim=start_frame={first}:end_frame={first + count},setpts=PTS-STARTPTS", "-r", f"{fps:g}"]
    cmd += ["-c:v", "libx264", "-preset", "medium", "-crf", str(STIMULUS_CRF), "-pix_fmt", "yuv420p"]
    cmd += ["-profile:v", "high", "-movflags", "+faststart", "-an", str(dst)]
    p = subprocess.run(cmd, capture_output=True, check=False)
    if p.returncode != 0 or not dst.is_file():
        why = " ".join(p.stderr.decode(errors="replace").split())[:300]
        raise InputError(f"cannot transcode {src}: {why}")


def _new_id(taken: set[str]) -> str:
    while (i := secrets.token_hex(5)) in taken:
        pass
    taken.add(i)
    return i


def build_test(
    eval_dirs: list[str | Path],
    out: str | Path,
    *,
    seconds: float = 4.0,
    size: int | None = None,
    raters: int = 8,
    seed: int | None = None,
) -> Manifest:
    """Build the test directory ``out`` (see the module docstring); returns its manifest."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"{out} already exists (a test and its votes are never overwritten); choose a new path"
        )
    if seconds <= 0 or raters < 1:
        raise InputError("--seconds must be > 0 and --raters >= 1")
    dirs = [Path(d) for d in eval_dirs]
    if not dirs:
        raise InputError("give at least one eval report directory")
    kept = [_kept(d) for d in dirs]
    try:
        if size is None:
            common = set.intersection(*(set(map(int, r["videos"])) for r in kept))
            if not common:
                raise InputError("the reports kept videos at no common size; pass --size")
            size = max(common)
        reports = [_report(d, r, size) for d, r in zip(dirs, kept)]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"malformed `videos` index in a report's results.json ({e!r})") from None
    seed = secrets.randbelow(2**31) if seed is None else seed

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _assemble(tmp, reports, size, seconds, raters, seed)
        save(tmp, manifest)
        (tmp / MANIFEST).chmod(0o644)  # atomic writes create 0600 files; a test is meant to be shared
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()  # an empty directory (checked above)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _assemble(
    tmp: Path, reports: list[_Report], size: int, seconds: float, raters: int, seed: int
) -> Manifest:
    (tmp / "stimuli").mkdir()
    taken: set[str] = set()
    sources: list[Source] = []
    stimuli: dict[str, Stimulus] = {}
    trials: dict[str, Trial] = {}

    def make(src: Source, p: _Point, roles: tuple[str, ...], first: int) -> Stimulus:
        sid = _new_id(taken)
        rel = f"stimuli/{sid}.mp4"
        transcode(p.file, tmp / rel, first, src.frames, src.fps)
        return Stimulus(sid, rel, src.id, p.system, p.label, p.kbps, roles)

    for i, rep in enumerate(reports):
        count = max(1, min(rep.frames, round(seconds * rep.fps)))
        src = Source(f"s{i}", str(rep.eval_dir.resolve()), rep.video, 0, count, rep.fps)
        sources.append(src)
        roles: dict[_Point, set[str]] = {rep.reference: {REFERENCE}}
        roles.update({p: {"nerfvc"} for p in rep.nerfvc})
        pairs: dict[tuple[_Point, _Point], set[str]] = {}
        for pts in rep.codecs.values():
            for ours in rep.nerfvc:
                c = _closest(pts, ours.rate)
                roles.setdefault(c, set()).add("matched")
                pairs.setdefault((ours, c), set()).add("matched")
            roles.setdefault(pts[0], set()).add("lowest")
            pairs.setdefault((rep.nerfvc[0], pts[0]), set()).add("lowest")
        made = {p: make(src, p, tuple(sorted(r)), src.first_frame) for p, r in roles.items()}
        for s in made.values():
            stimuli[s.id] = s
            tid = _new_id(taken)
            trials[tid] = Trial(tid, "acr", (s.id,))
        for (ours, other), r in pairs.items():
            tid = _new_id(taken)
            trials[tid] = Trial(tid, "pair", (made[ours].id, made[other].id), "+".join(sorted(r)))

    first_rep, first_src = reports[0], sources[0]
    worst = min((pts[0] for pts in first_rep.codecs.values()), key=lambda p: p.rate)
    tail = first_rep.frames - first_src.frames  # the anchors show the end of the test split
    training = tuple(make(first_src, p, ("training",), tail) for p in (first_rep.reference, worst))
    return Manifest(
        seed, size, seconds, tuple(sources), stimuli, trials, training, plan_raters(trials, raters, seed)
    )
