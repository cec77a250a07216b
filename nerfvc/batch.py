"""Batch runner: ``prepare`` → ``train`` → ``eval`` for many clips, as a DAG of one task per clip and step.

Without Ray the tasks run in this process one after another (clip by clip); with Ray (``--ray auto``: a new
local instance, ``--ray ADDRESS``: an existing cluster) the driver submits each clip's next step as soon as
its previous one finished, so up to ``cluster CPUs / cpus_per_task`` steps run at once. Tasks read and write
``WORK/<clip>/`` directly: on a cluster ``WORK`` and the videos must be on a filesystem every node mounts at
the same path (docs/batch.md). Each step caches its output there:

* ``dataset/`` — done when its ``manifest.json`` says ``"complete": true`` (prepare resumes a partial one);
* ``model_<M>min/`` — done when ``model.json`` verifies (``read_model_manifest``); a partial one holds a
  training checkpoint and training resumes it with the budget it has left. A recipe (``train``, `nerfvc
  train` options such as ``--fine-hidden 32``) names its own: ``model_<M>min_fine-hidden-32/``;
* ``report_<M>min[_<recipe>]_<size>/`` — done when ``results.json`` exists *and* ``bench.json`` records the
  same eval options (``build_report`` writes ``results.json`` last, atomically; ``bench.json`` after it).

So a killed run, rerun with the same options, continues where it stopped, and a finished one recomputes
nothing. A failing task (an exception, a worker that died, a step timeout) is retried once; if it fails again
its clip gets ``error.json`` and a summary row with the reason while the other clips go on, and it is not
retried by later runs unless asked (``retry_failed``). Each step's output goes to ``WORK/<clip>/<step>.log``;
``summarize`` reads what is on disk and writes the JSON + Markdown table after every finished task.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from nerfvc.errors import InputError
from nerfvc.eval.options import DISTS_FRAMES, EvalOptions
from nerfvc.fsutil import read_json, write_bytes_atomic, write_json_atomic
from nerfvc.machine import cpu_model, isa

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
class BatchConfig:
    """Options of one batch run (the eval options are stamped into each report to decide reuse)."""

    work: Path  # outputs in DIR/<clip>/ (shared FS on a cluster)
    minutes: float = 20.0  # training budget per clip
    size: int = 256  # the eval options (`--eval`): one size
    kbps: str = "1.5"
    codecs: str = EvalOptions.codecs
    max_frames: int = 0
    dists_frames: int = DISTS_FRAMES
    refine: int = 0  # the sender's expression refinement, L-BFGS iterations per frame (0: off)
    frame_step_by: str = EvalOptions.frame_step_by  # "render" or "rule" (nerfvc eval --frame-step-by)
    refine_pose: int = EvalOptions.refine_pose  # the sender's head-pose refinement steps (0: off)
    # minutes before a step is stopped and counted as failed (train: on top of its budget)
    step_timeout_minutes: float = 120.0
    # `nerfvc train` recipe options for every clip (`--train`, e.g. "--fine-hidden 32"); they name the model
    # and report directories, so recipes share the datasets of one --work and never each other's models
    train: str = ""
    retry_failed: bool = False  # rerun clips that failed in an earlier run
    retries: int = 1  # extra attempts of a failing task
    cpus_per_task: int = 1  # CPUs (and torch threads) per Ray task (Ray only)

    def eval_params(self) -> dict:
        return {
            "size": self.size,
            "kbps": self.kbps,
            "codecs": self.codecs,
            "max_frames": self.max_frames,
            "dists_frames": self.dists_frames,
            "minutes": self.minutes,
            **({"refine": self.refine} if self.refine else {}),  # reports from before the option stay valid
            # reports from before the frame step was chosen by rendering chose it by the rule
            **({"frame_step_by": self.frame_step_by} if self.frame_step_by != "rule" else {}),
            # reports from before the sender refined the head pose sent the tracker's
            **({"refine_pose": self.refine_pose} if self.refine_pose else {}),
        }

    def timeout_s(self, step: str) -> float:
        """Seconds before ``step`` is stopped (train: on top of its budget)."""
        return (self.step_timeout_minutes + (self.minutes if step == "train" else 0)) * 60


def parse_eval_options(text: str) -> dict[str, Any]:
    """The ``--eval`` string (``nerfvc eval`` options) as ``BatchConfig`` fields; InputError when bad."""
    import shlex

    p = argparse.ArgumentParser(prog="--eval", add_help=False, exit_on_error=False)
    p.add_argument("--sizes", type=int, dest="size")
    p.add_argument("--kbps")
    p.add_argument("--codecs")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--dists-frames", type=int)
    p.add_argument("--refine", type=int)
    p.add_argument("--frame-step-by", choices=["render", "rule"])
    p.add_argument("--refine-pose", type=int)
    try:
        ns, rest = p.parse_known_args(shlex.split(text))
    except (argparse.ArgumentError, ValueError) as e:
        raise InputError(f"--eval: {e}") from None
    if rest:
        raise InputError(
            f"--eval: unsupported option(s) {' '.join(rest)}; "
            "use --sizes S --kbps K,.. --codecs C,.. --max-frames N --dists-frames N --refine N "
            "--frame-step-by render|rule --refine-pose N"
        )
    opts = {k: v for k, v in vars(ns).items() if v is not None}
    for key in ("refine", "refine_pose"):
        if opts.get(key, 0) < 0:
            raise InputError(f"--eval: --{key.replace('_', '-')} needs N >= 0, got {opts[key]}")
    from nerfvc.eval.baselines import CODECS

    bad = [c for c in opts.get("codecs", "").split(",") if c and c not in CODECS]
    if bad:
        raise InputError(f"--eval: unknown codec(s) {', '.join(bad)}; choose from {', '.join(CODECS)}")
    return opts


@dataclass
class ClipPaths:
    root: Path
    dataset: Path
    model: Path
    report: Path

    @classmethod
    def of(cls, cfg: BatchConfig, clip: str) -> ClipPaths:
        root = Path(cfg.work) / clip
        m = run_tag(cfg.minutes, cfg.train)
        return cls(root, root / "dataset", root / f"model_{m}", root / report_name(m, cfg.size, cfg.refine))

    def output(self, step: str) -> Path:
        return {"prepare": self.dataset, "train": self.model, "eval": self.report}[step]

    @property
    def error(self) -> Path:
        return self.root / "error.json"

    @property
    def times(self) -> Path:
        return self.root / "times.json"

    @property
    def cpu_times(self) -> Path:
        return self.root / "cpu_times.json"


def run_tag(minutes: float, train: str = "") -> str:
    """``10min`` for the default recipe, ``10min_fine-hidden-32`` for ``--train "--fine-hidden 32"``."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", train).strip("-")
    return f"{minutes:g}min" + (f"_{slug}" if slug else "")


def report_name(tag: str, size: int, refine: int = 0) -> str:
    """``report_10min_256``, or ``report_10min_256_refine10`` with the sender's refinement."""
    return f"report_{tag}_{size}" + (f"_refine{refine}" if refine else "")


BUDGET_OPTIONS = ("--minutes", "--iters", "--eval-frames")  # the batch's, not a recipe's


def parse_train_options(text: str) -> tuple[Any, Any]:
    """The ``--train`` string as (TrainConfig, ModelConfig); InputError when bad or when it sets the
    budget (``--minutes`` is the batch's)."""
    import shlex

    from nerfvc.train.recipe import parse_recipe

    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise InputError(f"--train: {e}") from None
    budget = [t for t in tokens if t.split("=")[0] in BUDGET_OPTIONS]
    if budget:
        raise InputError(f"--train: {', '.join(budget)} is set by the batch (--minutes), not per recipe")
    return parse_recipe(text)


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
    """``prepare`` finished: its manifest says complete."""
    from nerfvc.datasetdir import MANIFEST

    return bool((_read(path / MANIFEST) or {}).get("complete"))


def model_done(path: Path) -> bool:
    """``train`` finished: ``model.json`` exists and every file matches its hash."""
    from nerfvc.errors import NerfvcError
    from nerfvc.modeldir import read_model_manifest

    try:
        read_model_manifest(path, verify=True)
    except (NerfvcError, OSError, ValueError):
        return False
    return True


def report_done(path: Path, params: dict) -> bool:
    """``eval`` finished with these options."""
    stamp = _read(path / "bench.json") or {}
    return (path / "results.json").is_file() and stamp.get("params") == params


def pending_steps(cfg: BatchConfig, clip: str) -> list[str]:
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


# --- the steps: library calls, the same ones the `nerfvc prepare/train/eval` commands make ----------------

StepFn = Callable[[BatchConfig, Path, ClipPaths], None]


def prepare_step(cfg: BatchConfig, video: Path, p: ClipPaths) -> None:
    """``nerfvc prepare VIDEO -o DATASET``."""
    from nerfvc.face.prepare import prepare

    prepare(video, p.dataset, progress=False)


def train_step(cfg: BatchConfig, video: Path, p: ClipPaths) -> None:
    """``nerfvc train DATASET -o MODEL --minutes M --eval-frames 0`` with the batch's ``--train`` options."""
    from nerfvc.train.trainer import train

    tcfg, mcfg = parse_train_options(cfg.train)
    tcfg = dataclasses.replace(tcfg, minutes=cfg.minutes, eval_frames=0, progress=False)
    train(p.dataset, p.model, tcfg, mcfg)


def eval_step(cfg: BatchConfig, video: Path, p: ClipPaths) -> None:
    """``nerfvc eval MODEL VIDEO -o REPORT`` with the batch's eval options."""
    from nerfvc.eval.run import run_eval

    run_eval(
        EvalOptions(
            video=str(video),
            out=str(p.report),
            model=str(p.model),
            sizes=str(cfg.size),
            kbps=cfg.kbps,
            codecs=cfg.codecs,
            dists_frames=int(cfg.dists_frames),
            max_frames=int(cfg.max_frames),
            refine=int(cfg.refine),
            frame_step_by=cfg.frame_step_by,
            refine_pose=int(cfg.refine_pose),
        )
    )


@dataclass(frozen=True)
class Steps:
    """What each step runs; tests swap in tiny ones. Must be picklable (module-level functions) for Ray."""

    prepare: StepFn = prepare_step
    train: StepFn = train_step
    eval: StepFn = eval_step


class StepTimeout(Exception):
    """A step ran past ``BatchConfig.timeout_s``."""


class IncompleteOutput(Exception):
    """A step returned without leaving a complete output."""


@contextlib.contextmanager
def _redirect(log: IO[str]) -> Iterator[None]:
    """Send stdout and stderr to ``log``: Python's and the file descriptors' (native libraries, encoders)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in the main thread after ``seconds`` (no-op elsewhere, e.g. in a Ray worker)."""
    if threading.current_thread() is not threading.main_thread() or not math.isfinite(seconds):
        yield
        return

    def fire(*_: Any) -> None:
        raise StepTimeout(f"timed out after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_step(
    cfg: BatchConfig, steps: Steps, video: Path, step: str, attempt: int, threads: int | None = None
) -> dict[str, float]:
    """One task: run ``step`` of ``video``'s clip with its output in ``<step>.log``, check the output is
    complete (and stamp the report); return its wall and CPU seconds. Raises what the step raised."""
    p = ClipPaths.of(cfg, clip_name(video))
    p.root.mkdir(parents=True, exist_ok=True)
    if threads:
        os.environ["NERFVC_THREADS"] = str(threads)  # configure_threads() reads it
    t, cpu = time.perf_counter(), _cpu_seconds()
    with open(p.root / f"{step}.log", "a") as log:
        log.write(f"$ {step} {video} (attempt {attempt}, pid {os.getpid()})\n")
        log.flush()
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        try:
            with _redirect(log), _alarm(cfg.timeout_s(step)):
                getattr(steps, step)(cfg, video, p)
            done = {
                "prepare": lambda: dataset_done(p.dataset),
                "train": lambda: model_done(p.model),
                "eval": lambda: (p.report / "results.json").is_file(),
            }[step]()
            if not done:
                raise IncompleteOutput(f"{step} returned but {p.output(step).name} is incomplete")
        except Exception:
            log.write(traceback.format_exc())
            raise
        finally:
            logging.getLogger().removeHandler(handler)
    if step == "eval":
        write_json_atomic(p.report / "bench.json", {"params": cfg.eval_params()})
    return {"seconds": time.perf_counter() - t, "cpu_seconds": _cpu_seconds() - cpu}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the encoders eval runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def failure_reason(exc: BaseException) -> str:
    """One line saying why a task failed (the step's own exception when Ray wrapped it)."""
    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
    if isinstance(cause, BaseException):
        exc = cause
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


# --- executors: where tasks run ---------------------------------------------------------------------------


@dataclass
class Task:
    video: Path
    step: str
    attempt: int = 1

    @property
    def clip(self) -> str:
        return clip_name(self.video)


Finished = tuple[Task, dict[str, float] | None, BaseException | None]


class SequentialExecutor:
    """Runs each task in this process when asked for the next result. Last in, first out: a clip's next
    step, submitted when its previous one finishes, runs before the other clips start (clip by clip)."""

    description = "sequential, in-process"

    def __init__(self, cfg: BatchConfig, steps: Steps) -> None:
        self.cfg, self.steps = cfg, steps
        self.queue: list[Task] = []

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def busy(self) -> bool:
        return bool(self.queue)

    def next(self) -> Finished:
        task = self.queue.pop()
        try:
            return task, run_step(self.cfg, self.steps, task.video, task.step, task.attempt), None
        except Exception as e:
            return task, None, e

    def close(self) -> None:
        pass


def import_ray() -> Any:
    """The ``ray`` module, or InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(
            "--ray needs the optional dependency ray: pip install 'nerfvc[cluster]' "
            "(or pip install -r requirements-cluster.txt)"
        ) from None
    return ray


class RayExecutor:
    """Runs each task as a Ray task (``num_cpus=cpus_per_task``, no Ray-level retries: the batch retries).

    ``address`` ``"auto"`` starts a new local Ray instance (stopped at the end), anything else joins that
    cluster; a Ray already initialised in this process (e.g. by a test) is used as it is. Paths are made
    absolute before they are sent: workers must see them at the same place (a shared filesystem)."""

    def __init__(self, cfg: BatchConfig, steps: Steps, address: str) -> None:
        self.ray = ray = import_ray()
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(address="local" if address == "auto" else address, include_dashboard=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        self.description = f"Ray ({address}, {cpus:g} CPUs, {cfg.cpus_per_task} per task)"
        self.cfg = dataclasses.replace(cfg, work=Path(cfg.work).resolve())
        self.steps = steps
        self.remote = ray.remote(num_cpus=cfg.cpus_per_task, max_retries=0)(run_step)
        self.running: dict[Any, tuple[Task, float]] = {}  # ObjectRef → (task, deadline)

    def submit(self, task: Task) -> None:
        ref = self.remote.remote(
            self.cfg, self.steps, task.video.resolve(), task.step, task.attempt, self.cfg.cpus_per_task
        )
        self.running[ref] = (task, time.monotonic() + self.cfg.timeout_s(task.step))

    def busy(self) -> bool:
        return bool(self.running)

    def next(self) -> Finished:
        while True:
            deadline = min(d for _, d in self.running.values())
            wait = max(0.0, min(deadline - time.monotonic(), 60.0))
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=wait)
            if ready:
                task, _ = self.running.pop(ready[0])
                try:
                    return task, self.ray.get(ready[0]), None
                except Exception as e:
                    return task, None, e
            for ref, (task, d) in list(self.running.items()):
                if time.monotonic() >= d:  # only a forced cancel stops a running task: it kills its worker
                    self.ray.cancel(ref, force=True)
                    del self.running[ref]
                    return task, None, StepTimeout(f"timed out after {self.cfg.timeout_s(task.step):.0f} s")

    def close(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        if self.owned:
            self.ray.shutdown()


# --- the driver -------------------------------------------------------------------------------------------


def run_batch(
    cfg: BatchConfig,
    videos: Sequence[Path],
    out: Path,
    *,
    steps: Steps | None = None,
    ray: str | None = None,
    command: str = "",
    title: str = "nerfvc batch",
    log: Path | None = None,
) -> dict:
    """Run every clip's pending steps (in-process, or on Ray when ``ray`` is an address or ``"auto"``),
    retrying a failing task once; rewrite the summary ``out``.json/.md after each task; return it."""
    videos = [Path(v) for v in videos]
    clips = [clip_name(v) for v in videos]
    dupes = sorted({c for c in clips if clips.count(c) > 1})
    if dupes:
        raise InputError(f"several videos named {', '.join(dupes)}: clip names (file stems) must be unique")
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        raise InputError(f"no such video: {', '.join(missing)}")
    steps = steps or Steps()
    t0 = time.time()

    def say(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {time.time() - t0:6.0f}s {msg}"
        print(line, flush=True)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(line + "\n")

    executor = SequentialExecutor(cfg, steps) if ray is None else RayExecutor(cfg, steps, ray)
    machine = {"cpu_model": cpu_model(), "isa": isa(), "cores": os.cpu_count()}  # of the driver
    info: dict[str, Any] = {
        "executor": executor.description,
        "title": title,
        "command": command,
        "machine": machine,
    }
    summarize(cfg, clips, out, wall_s=0.0, **info)
    try:
        say(f"{len(videos)} clips, {executor.description}")
        firsts = [(v, _first_step(cfg, v, say)) for v in videos]
        for v, first in reversed(firsts):  # reversed: the sequential executor runs the last submitted first
            if first:
                executor.submit(Task(v, first))
        while executor.busy():
            task, times, exc = executor.next()
            p = ClipPaths.of(cfg, task.clip)
            if exc is None:
                assert times is not None
                _add_times(p, task.step, times)
                say(f"{task.clip}: {task.step} done in {times['seconds']:.0f} s")
                nxt = STEPS.index(task.step) + 1
                if nxt < len(STEPS):
                    executor.submit(Task(task.video, STEPS[nxt]))
            elif task.attempt <= cfg.retries:
                say(f"{task.clip}: {task.step} failed ({failure_reason(exc)}); retrying")
                executor.submit(Task(task.video, task.step, task.attempt + 1))
            else:
                error = {"step": task.step, "attempts": task.attempt, "message": failure_reason(exc)}
                write_json_atomic(p.error, error)
                say(f"{task.clip}: {task.step} FAILED after {task.attempt} attempts: {error['message']}")
            summarize(cfg, clips, out, wall_s=time.time() - t0, **info)
    finally:
        executor.close()
    summary = summarize(cfg, clips, out, wall_s=time.time() - t0, **info)
    say(f"summary: {out.with_suffix('.md')}")
    return summary


def _first_step(cfg: BatchConfig, video: Path, say: Callable[[str], None]) -> str | None:
    """The step to start ``video``'s clip with, or None (complete, or failed before and not retried)."""
    p = ClipPaths.of(cfg, clip_name(video))
    if p.error.is_file() and not cfg.retry_failed:
        err = _read(p.error) or {}
        say(f"{p.root.name}: skipped, failed before at {err.get('step')} (retry with --retry-failed)")
        return None
    p.error.unlink(missing_ok=True)
    todo = pending_steps(cfg, p.root.name)
    if not todo:
        say(f"{p.root.name}: complete (cached)")
    return todo[0] if todo else None


def _add_times(p: ClipPaths, step: str, times: dict[str, float]) -> None:
    """Add a finished step's wall and CPU seconds (per output dir: another budget has its own)."""
    key = p.output(step).name
    for path, value in ((p.times, times["seconds"]), (p.cpu_times, times["cpu_seconds"])):
        d = _read(path) or {}
        d[key] = d.get(key, 0.0) + value
        write_json_atomic(path, d)


# --- the summary ------------------------------------------------------------------------------------------


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


def clip_row(cfg: BatchConfig, clip: str) -> dict:
    """One summary row: status, step times, nerfvc / x265-lowest-rate / freeze metrics (or the error)."""
    p = ClipPaths.of(cfg, clip)
    row: dict = {"clip": clip, "status": "pending", "minutes": cfg.minutes, "size": cfg.size}
    for key, path in (("seconds", p.times), ("cpu_seconds", p.cpu_times)):
        t = _read(path) or {}
        if t:
            row[key] = {s: round(t[p.output(s).name], 1) for s in STEPS if p.output(s).name in t}
    if p.error.is_file():
        row["status"] = "failed"
        row["error"] = _read(p.error)
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


def _machine_line(machine: dict | None) -> str:
    """Where the batch ran, for the summary table."""
    if not machine:
        return "Machine: not recorded."
    flags = ", ".join(k for k, v in machine["isa"].items() if v) or "none of the tracked ISA flags"
    return f"Machine (driver): {machine['cpu_model']}, {machine['cores']} cores, {flags}."


def markdown(summary: dict) -> str:
    """The summary table: one row per clip; each metric cell is ``nerfvc / x265 lowest rate / freeze``."""
    cfg = summary["config"]
    pose_steps = cfg.get("refine_pose", 0)  # summaries from before the option: the tracker's poses
    lines = [
        f"# {summary['title']}",
        "",
        f"Per clip: `nerfvc prepare`, `nerfvc train --minutes {cfg['minutes']:g}"
        + (f" {cfg['train']}" if cfg.get("train") else "")
        + "`, `nerfvc eval"
        + (f" --refine {cfg['refine']}" if cfg.get("refine") else "")
        + (f" --frame-step-by {cfg['frame_step_by']}" if cfg.get("frame_step_by", "rule") != "render" else "")
        + (f" --refine-pose {pose_steps}" if pose_steps != EvalOptions.refine_pose else "")
        + "` at "
        f"{cfg['size']}² (nerfvc targets {cfg['kbps']} kbps; codecs {cfg['codecs']}; "
        f"{'all' if not cfg['max_frames'] else cfg['max_frames']} test frames of the last 20%). "
        "Each metric cell is **nerfvc / x265 at its lowest rate / freeze**; nerfvc is its lowest-rate point.",
        "",
        f"Command: `{summary['command']}` ({summary['executor']}); wall time of this invocation "
        f"{summary['wall_minutes']:.1f} min (cached steps cost nothing); time spent in the finished steps "
        f"of all clips, over all invocations: {summary['step_minutes']:.1f} min.",
        "",
        _machine_line(summary.get("machine")),
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
    tag = run_tag(cfg["minutes"], cfg.get("train", ""))
    name = report_name(tag, cfg["size"], cfg.get("refine", 0))
    lines += ["", f"Reports: `{Path(cfg['work'])}/<clip>/{name}/report.html`.", ""]
    return "\n".join(lines)


def summarize(
    cfg: BatchConfig,
    clips: Sequence[str],
    out: Path,
    *,
    wall_s: float,
    command: str = "",
    title: str = "nerfvc batch",
    executor: str = "",
    machine: dict | None = None,
) -> dict:
    """Write ``out``.json and ``out``.md from what is on disk for ``clips``; return the summary."""
    rows = [clip_row(cfg, c) for c in clips]
    summary: dict[str, Any] = {
        "title": title,
        "command": command,
        "executor": executor,
        "machine": machine,
        "config": {**asdict(cfg), "work": str(cfg.work)},
        "wall_minutes": wall_s / 60,
        "clips": rows,
        "step_minutes": sum(sum(r.get("seconds", {}).values()) for r in rows) / 60,
    }
    from nerfvc.eval.video import to_jsonable

    write_json_atomic(out.with_suffix(".json"), to_jsonable(summary))
    write_bytes_atomic(out.with_suffix(".md"), markdown(summary).encode())
    return summary


def failed_clips(summary: dict) -> list[str]:
    """Clips of ``summary`` that did not finish ok."""
    return [r["clip"] for r in summary["clips"] if r["status"] != "ok"]
