"""Resumable per-clip benchmark: ``nerfvc prepare`` → ``nerfvc train`` → ``nerfvc eval`` on each shared clip.

Used by ``benchmarks/clips.py`` (``make bench``). Every step runs the real ``nerfvc`` command in a subprocess
(its output goes to ``WORK/<clip>/<step>.log``) and caches its output under ``WORK/<clip>/``:

* ``dataset/`` — done when its ``manifest.json`` says ``"complete": true`` (``nerfvc prepare`` resumes a
  partial one by itself);
* ``model_<M>min/`` — done when ``model.json`` verifies (``read_model_manifest``); a partial one holds a
  training checkpoint and ``nerfvc train`` resumes it with the budget it has left;
* ``report_<M>min_<size>/`` — done when ``results.json`` exists *and* ``bench.json`` records the same eval
  options (``build_report`` writes ``results.json`` last, atomically; ``bench.json`` is written after it).

So a killed run, rerun with the same options, continues where it stopped. A clip whose step fails (no face,
two faces, a crash, a timeout) gets ``error.json`` and a row with the error; it is not retried unless asked
(``retry_failed``). ``summarize`` reads whatever is on disk and writes the JSON + Markdown table.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nerfvc.fsutil import read_json, write_bytes_atomic, write_json_atomic

# metrics in the summary row, with their Markdown heading
ROW_METRICS = {
    "kbps": "kbps",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "dists": "DISTS",
    "csim": "CSIM",
    "prmse": "PRMSE°",
    "aucon": "AUCON",
}
ROW_SYSTEMS = ("nerfvc", "x265", "freeze")
STEPS = ("prepare", "train", "eval")


@dataclass
class BenchConfig:
    """Options of one bench run (the eval options are stamped into each report to decide reuse)."""

    work: Path
    minutes: float = 20.0
    size: int = 256
    kbps: str = "1.5"
    codecs: str = "x265,x264,vvenc,svtav1"
    max_frames: int = 0
    dists_frames: int = 8
    step_timeout_minutes: float = 120.0
    retry_failed: bool = False

    def eval_params(self) -> dict:
        return {
            "size": self.size,
            "kbps": self.kbps,
            "codecs": self.codecs,
            "max_frames": self.max_frames,
            "dists_frames": self.dists_frames,
            "minutes": self.minutes,
        }


@dataclass
class ClipPaths:
    root: Path
    dataset: Path
    model: Path
    report: Path

    @classmethod
    def of(cls, cfg: BenchConfig, clip: str) -> ClipPaths:
        root = Path(cfg.work) / clip
        m = f"{cfg.minutes:g}min"
        return cls(root, root / "dataset", root / f"model_{m}", root / f"report_{m}_{cfg.size}")

    def output(self, step: str) -> Path:
        return {"prepare": self.dataset, "train": self.model, "eval": self.report}[step]

    @property
    def error(self) -> Path:
        return self.root / "error.json"

    @property
    def times(self) -> Path:
        return self.root / "times.json"


def clip_name(video: str | Path) -> str:
    return Path(video).stem


def _read(path: Path) -> dict | None:
    """A JSON object from ``path``, or None when it is missing or unreadable."""
    from nerfvc.errors import NerfvcError

    try:
        d = read_json(path)
    except (NerfvcError, OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def dataset_done(path: Path) -> bool:
    """``nerfvc prepare`` finished: its manifest says complete."""
    return bool((_read(path / "manifest.json") or {}).get("complete"))


def model_done(path: Path) -> bool:
    """``nerfvc train`` finished: ``model.json`` exists and every file matches its hash."""
    from nerfvc.errors import NerfvcError
    from nerfvc.modeldir import read_model_manifest

    try:
        read_model_manifest(path, verify=True)
    except (NerfvcError, OSError, ValueError):
        return False
    return True


def report_done(path: Path, params: dict) -> bool:
    """``nerfvc eval`` finished with these options."""
    stamp = _read(path / "bench.json") or {}
    return (path / "results.json").is_file() and stamp.get("params") == params


def pending_steps(cfg: BenchConfig, clip: str) -> list[str]:
    """The steps still to run for ``clip`` (in order); empty when its report is complete."""
    p = ClipPaths.of(cfg, clip)
    done = {
        "prepare": dataset_done(p.dataset),
        "train": model_done(p.model),
        "eval": report_done(p.report, cfg.eval_params()),
    }
    if done["eval"]:
        return []
    first = next((i for i, s in enumerate(STEPS) if not done[s]), len(STEPS))
    return list(STEPS[first:])


def step_command(cfg: BenchConfig, video: Path, step: str) -> list[str]:
    """The ``nerfvc`` arguments of one step."""
    p = ClipPaths.of(cfg, clip_name(video))
    if step == "prepare":
        return ["prepare", str(video), "-o", str(p.dataset), "-q"]
    if step == "train":
        return [
            "train",
            str(p.dataset),
            "-o",
            str(p.model),
            "--minutes",
            f"{cfg.minutes:g}",
            "--eval-frames",
            "0",
        ]
    if step == "eval":
        cmd = ["eval", str(p.model), str(video), "-o", str(p.report), "--sizes", str(cfg.size)]
        cmd += ["--kbps", cfg.kbps, "--codecs", cfg.codecs, "--dists-frames", str(cfg.dists_frames)]
        return [*cmd, "--max-frames", str(cfg.max_frames)]
    raise ValueError(step)


Runner = Callable[[list[str], Path, float], int]


def run_nerfvc(args: list[str], log_path: Path, timeout_s: float) -> int:
    """Run ``nerfvc ARGS`` with this interpreter, stdout+stderr to ``log_path``; return its exit code.

    If this process is stopped meanwhile (Ctrl-C, or SIGTERM made SystemExit by ``benchmarks/clips.py``) or
    the step times out, the child gets SIGINT first — ``nerfvc train`` then writes a checkpoint, so the
    rerun resumes — and is killed if it has not exited 60 s later. No orphan keeps writing to the cache.
    """
    cmd = [
        sys.executable,
        "-c",
        "import sys; from nerfvc.cli import main; sys.exit(main(sys.argv[1:]))",
        *args,
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ nerfvc {' '.join(args)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            log.write(f"timed out after {timeout_s:.0f} s\n")
            return -1
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-500:]


@dataclass
class ClipOutcome:
    clip: str
    ran: list[str] = field(default_factory=list)
    error: dict | None = None


def run_clip(
    cfg: BenchConfig,
    video: Path,
    runner: Runner = run_nerfvc,
    say: Callable[[str], None] = print,
) -> ClipOutcome:
    """Run the pending steps of one clip; a failed step writes ``error.json`` and stops that clip."""
    clip = clip_name(video)
    p = ClipPaths.of(cfg, clip)
    out = ClipOutcome(clip)
    if p.error.is_file() and not cfg.retry_failed:
        out.error = read_json(p.error)
        say(f"{clip}: skipped, failed before at {out.error.get('step')} (retry with --retry-failed)")
        return out
    p.error.unlink(missing_ok=True)
    todo = pending_steps(cfg, clip)
    if not todo:
        say(f"{clip}: complete (cached)")
        return out
    p.root.mkdir(parents=True, exist_ok=True)
    times = read_json(p.times) if p.times.is_file() else {}
    for step in todo:
        say(f"{clip}: {step} …")
        t = time.time()
        # the timeout is on top of the training budget for the train step
        timeout_s = (cfg.step_timeout_minutes + (cfg.minutes if step == "train" else 0)) * 60
        try:
            code = runner(step_command(cfg, video, step), p.root / f"{step}.log", timeout_s)
        finally:  # also when interrupted: a resumed step adds to what it had spent
            dt = time.time() - t
            key = p.output(step).name  # per output dir: another budget or size has its own times
            times[key] = times.get(key, 0.0) + dt
            write_json_atomic(p.times, times)
        ok = (
            code == 0
            and {
                "prepare": lambda: dataset_done(p.dataset),
                "train": lambda: model_done(p.model),
                "eval": lambda: (p.report / "results.json").is_file(),
            }[step]()
        )
        if not ok:
            out.error = {"step": step, "exit_code": code, "message": _tail(p.root / f"{step}.log")}
            write_json_atomic(p.error, out.error)
            say(f"{clip}: {step} FAILED (exit {code}) after {dt:.0f} s: {out.error['message']}")
            return out
        if step == "eval":
            write_json_atomic(p.report / "bench.json", {"params": cfg.eval_params()})
        out.ran.append(step)
        say(f"{clip}: {step} done in {dt:.0f} s")
    return out


def _num(v) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        return math.inf if v == "inf" else math.nan
    return float(v)


def _pick(points: Sequence[dict], how: str) -> dict | None:
    pts = [p for p in points if math.isfinite(_num(p.get("kbps")))]
    if not pts:
        return None
    return min(pts, key=lambda p: _num(p["kbps"])) if how == "lowest" else pts[0]


def clip_row(cfg: BenchConfig, clip: str) -> dict:
    """One summary row: status, step times, nerfvc / x265-lowest-rate / freeze metrics (or the error)."""
    p = ClipPaths.of(cfg, clip)
    row: dict = {"clip": clip, "status": "pending", "minutes": cfg.minutes, "size": cfg.size}
    if p.times.is_file():
        t = read_json(p.times)
        row["seconds"] = {s: round(t[p.output(s).name], 1) for s in STEPS if p.output(s).name in t}
    if p.error.is_file():
        row["status"] = "failed"
        row["error"] = read_json(p.error)
        return row
    if not report_done(p.report, cfg.eval_params()):
        row["pending"] = pending_steps(cfg, clip)
        return row
    res = read_json(p.report / "results.json")
    systems = res.get("systems", {})
    row["status"] = "ok"
    row["test_frames"] = res.get("num_frames")
    row["report"] = str(p.report / "report.html")
    nerfvc = systems.get("nerfvc", [])
    row["nerfvc_points"] = [{k: p_.get(k) for k in ("label", *ROW_METRICS)} for p_ in nerfvc]
    for name, how in (("nerfvc", "lowest"), ("x265", "lowest"), ("freeze", "first")):
        pt = _pick(systems.get(name, []), how)
        row[name] = None if pt is None else {"label": pt.get("label"), **{k: pt.get(k) for k in ROW_METRICS}}
    return row


def _fmt(v) -> str:
    x = _num(v)
    if not math.isfinite(x):
        return "inf" if x == math.inf else "–"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def markdown(summary: dict) -> str:
    """The summary table: one row per clip; each metric cell is ``nerfvc / x265 lowest rate / freeze``."""
    cfg = summary["config"]
    lines = [
        "# nerfvc on the shared clips",
        "",
        f"Per clip: `nerfvc prepare`, `nerfvc train --minutes {cfg['minutes']:g}`, `nerfvc eval` at "
        f"{cfg['size']}² (nerfvc targets {cfg['kbps']} kbps; codecs {cfg['codecs']}; "
        f"{'all' if not cfg['max_frames'] else cfg['max_frames']} test frames of the last 20%). "
        "Each metric cell is **nerfvc / x265 at its lowest rate / freeze**; nerfvc is its lowest-rate point.",
        "",
        f"Command: `{summary['command']}`; wall time of this invocation {summary['wall_minutes']:.1f} min "
        f"(cached steps cost nothing); time spent in the steps of all clips, over all invocations: "
        f"{summary['step_minutes']:.1f} min.",
        "",
        "| clip | status | " + " | ".join(ROW_METRICS.values()) + " | prepare / train / eval (min) |",
        "|---" * (len(ROW_METRICS) + 3) + "|",
    ]
    for r in summary["clips"]:
        secs = r.get("seconds", {})
        t = " / ".join(_fmt(secs[s] / 60) if s in secs else "–" for s in STEPS)
        if r["status"] != "ok":
            why = r.get("error") or {"step": ", ".join(r.get("pending", []))}
            msg = f"{r['status']} at {why.get('step')}: {why.get('message', '')}".replace("|", "/")[:160]
            lines.append(f"| {r['clip']} | {msg} |" + " |" * len(ROW_METRICS) + f" {t} |")
            continue
        cells = [" / ".join(_fmt((r.get(s) or {}).get(k)) for s in ROW_SYSTEMS) for k in ROW_METRICS]
        lines.append(f"| {r['clip']} | ok | " + " | ".join(cells) + f" | {t} |")
    lines += ["", "Reports: `" + str(Path(cfg["work"])) + "/<clip>/report_<M>min_<size>/report.html`.", ""]
    return "\n".join(lines)


def summarize(cfg: BenchConfig, clips: Sequence[str], out: Path, command: str, wall_s: float) -> dict:
    """Write ``out``.json and ``out``.md from what is on disk for ``clips``; return the summary."""
    summary = {
        "command": command,
        "config": {**asdict(cfg), "work": str(cfg.work)},
        "wall_minutes": wall_s / 60,
        "clips": [clip_row(cfg, c) for c in clips],
    }
    summary["step_minutes"] = sum(sum(r.get("seconds", {}).values()) for r in summary["clips"]) / 60
    from nerfvc.eval.video import to_jsonable

    write_json_atomic(out.with_suffix(".json"), to_jsonable(summary))
    write_bytes_atomic(out.with_suffix(".md"), markdown(summary).encode())
    return summary


def run_bench(
    cfg: BenchConfig,
    videos: Sequence[Path],
    out: Path,
    *,
    command: str = "",
    runner: Runner = run_nerfvc,
    log: Path | None = None,
) -> dict:
    """Run every clip in turn (resuming), rewriting the summary after each; return the final summary."""
    t0 = time.time()

    def say(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {time.time() - t0:6.0f}s {msg}"
        print(line, flush=True)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(line + "\n")

    clips = [clip_name(v) for v in videos]
    summary = summarize(cfg, clips, out, command, 0.0)
    for v in videos:
        run_clip(cfg, Path(v), runner, say)
        summary = summarize(cfg, clips, out, command, time.time() - t0)
    say(f"summary: {out.with_suffix('.md')}")
    return summary
