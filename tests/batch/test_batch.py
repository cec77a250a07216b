"""The batch runner on tiny synthetic clips: the summary, resuming after a kill, retrying a failing task once,
recomputing nothing on a rerun, the same rows on a local Ray as in-process, and the CLI's exit codes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

from nerfvc import batch as B
from nerfvc.cli import main as cli_main
from nerfvc.field.encodings import HashGridConfig
from nerfvc.field.fields import HeadFieldConfig
from nerfvc.fsutil import write_json_atomic
from nerfvc.render.model import ModelConfig
from nerfvc.train.synthetic import make_synthetic_dataset
from nerfvc.train.trainer import TrainConfig

SIZE = 48
HAVE_RAY = importlib.util.find_spec("ray") is not None

# --- tiny steps: a 10-frame synthetic dataset, 20 training steps at 48 px, PSNR on the 2 test frames ------
# Each records its call in WORK/calls.log; marker files in WORK make one step of one clip misbehave:
# fail_<step>_<clip> raises every time, interrupt_<step>_<clip> raises KeyboardInterrupt once (a kill of
# the in-process run), crash_<step>_<clip> kills the process once (a dead Ray worker), sleep_<step>_<clip>
# sleeps past any timeout.


def _enter(cfg: B.BatchConfig, step: str, p: B.ClipPaths) -> None:
    work, clip = Path(cfg.work), p.root.name
    with open(work / "calls.log", "a") as f:
        f.write(f"{clip} {step}\n")
    print(f"print from {step}")
    os.write(2, f"native write from {step}\n".encode())  # as mediapipe's or an encoder's messages
    if (work / f"fail_{step}_{clip}").exists():
        raise RuntimeError(f"bad clip {clip}")
    if (work / f"sleep_{step}_{clip}").exists():
        time.sleep(30)
    for kind in ("interrupt", "crash"):
        marker = work / f"{kind}_{step}_{clip}"
        if marker.exists():
            marker.unlink()
            if kind == "crash":
                os._exit(1)
            raise KeyboardInterrupt


def tiny_prepare(cfg: B.BatchConfig, video: Path, p: B.ClipPaths) -> None:
    _enter(cfg, "prepare", p)
    make_synthetic_dataset(p.dataset, num_frames=10, size=SIZE)


def tiny_train(cfg: B.BatchConfig, video: Path, p: B.ClipPaths) -> None:
    from nerfvc.train.trainer import train

    _enter(cfg, "train", p)
    fine = HeadFieldConfig(grid=HashGridConfig(levels=8, features=2, log2_table=12, base_res=8, max_res=96))
    model = ModelConfig(fine=fine, n_coarse=16, n_fine=16, occupancy_res=32)
    tc = TrainConfig(iters=20, batch_rays=256, eval_frames=0, progress=False, checkpoint_seconds=1e9)
    train(p.dataset, p.model, tc, model)


def tiny_eval(cfg: B.BatchConfig, video: Path, p: B.ClipPaths) -> None:
    from nerfvc.render.renderer import Renderer
    from nerfvc.train.dataset import load_dataset
    from nerfvc.train.trainer import evaluate

    _enter(cfg, "eval", p)
    ds = load_dataset(p.dataset)
    m = evaluate(Renderer.from_model_dir(p.model).model, ds, ds.test_idx)
    systems = {
        "nerfvc": [{"label": "tiny", "kbps": 1.0, "psnr": m["psnr"], "ssim": m["ssim"]}],
        "x265": [
            {"label": "crf 40", "kbps": 20.0, "psnr": 30.0},
            {"label": "crf 51", "kbps": 9.0, "psnr": 24.0},
        ],
        "freeze": [{"label": "intra", "kbps": 3.0, "psnr": 20.0}],
    }
    write_json_atomic(p.report / "results.json", {"systems": systems, "num_frames": len(ds.test_idx)})


TINY = B.Steps(prepare=tiny_prepare, train=tiny_train, eval=tiny_eval)


def _setup(tmp_path: Path, clips: list[str], **kw) -> tuple[B.BatchConfig, list[Path]]:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    videos = [tmp_path / f"{c}.mp4" for c in clips]
    for v in videos:
        v.write_bytes(b"")  # the tiny steps never read it
    return B.BatchConfig(work=work, minutes=1, codecs="x265", max_frames=2, **kw), videos


def _calls(cfg: B.BatchConfig) -> list[str]:
    path = Path(cfg.work) / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _rows(summary: dict) -> list[dict]:
    """Summary rows without what depends on the run (times, paths)."""
    drop = {"seconds", "cpu_seconds", "report"}
    return [{k: v for k, v in r.items() if k not in drop} for r in summary["clips"]]


# one thread, as in a 1-CPU Ray task, so in-process and Ray runs compute the same numbers; the pure-torch hash
# grid: the C++ kernel's first build (~40 s) is not what these tests are about
ENV = {"NERFVC_THREADS": "1", "NERFVC_NO_CPP": "1"}


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def test_sequential_batch_writes_the_summary(tmp_path):
    cfg, videos = _setup(tmp_path, ["alice", "bob"])
    out = tmp_path / "res" / "summary"
    s = B.run_batch(cfg, videos, out, steps=TINY, command="nerfvc batch …")
    # clip by clip, each in DAG order
    assert _calls(cfg) == [f"{c} {s}" for c in ("alice", "bob") for s in B.STEPS]
    assert [r["status"] for r in s["clips"]] == ["ok", "ok"] and B.failed_clips(s) == []
    row = s["clips"][0]
    assert row["nerfvc"]["kbps"] == 1.0 and row["nerfvc"]["psnr"] > 10
    assert row["x265"]["label"] == "crf 51" and row["test_frames"] == 2
    assert set(row["seconds"]) == set(row["cpu_seconds"]) == set(B.STEPS)
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# nerfvc batch\n") and "(sequential, in-process)" in md
    assert "| alice | ok | 1 / 9 / 3 | " in md and "| bob | ok |" in md
    assert json.loads(out.with_suffix(".json").read_text())["clips"][1]["clip"] == "bob"
    log = (cfg.work / "alice" / "train.log").read_text()
    assert log.startswith("$ train ") and "print from train" in log and "native write from train" in log


def test_rerun_of_a_finished_batch_recomputes_nothing(tmp_path):
    cfg, videos = _setup(tmp_path, ["alice", "bob"])
    first = B.run_batch(cfg, videos, tmp_path / "s1", steps=TINY)
    calls = _calls(cfg)
    mtimes = {f: f.stat().st_mtime_ns for f in cfg.work.rglob("*") if f.is_file()}
    again = B.run_batch(cfg, videos, tmp_path / "s2", steps=TINY)
    assert _calls(cfg) == calls
    assert {f: f.stat().st_mtime_ns for f in cfg.work.rglob("*") if f.is_file()} == mtimes
    assert again["clips"] == first["clips"]


def test_killed_run_resumes_with_the_missing_steps(tmp_path):
    cfg, videos = _setup(tmp_path, ["alice", "bob"])
    (cfg.work / "interrupt_eval_bob").touch()
    with pytest.raises(KeyboardInterrupt):
        B.run_batch(cfg, videos, tmp_path / "s", steps=TINY)
    assert B.pending_steps(cfg, "alice") == [] and B.pending_steps(cfg, "bob") == ["eval"]
    n = len(_calls(cfg))
    s = B.run_batch(cfg, videos, tmp_path / "s", steps=TINY)
    assert _calls(cfg)[n:] == ["bob eval"] and B.failed_clips(s) == []

    paths = B.ClipPaths.of(cfg, "alice")
    # killed during eval after results.json, before its stamp → eval only
    (paths.report / "bench.json").unlink()
    assert B.pending_steps(cfg, "alice") == ["eval"]
    # a tampered (or half-written) model fails verification → train + eval
    (paths.model / "model.json").write_text("{}")
    assert B.pending_steps(cfg, "alice") == ["train", "eval"]
    # other eval options: only eval; another training budget: a new model dir
    assert B.pending_steps(dataclasses.replace(cfg, kbps="0.8"), "bob") == ["eval"]
    assert B.pending_steps(dataclasses.replace(cfg, minutes=5), "bob") == ["train", "eval"]


def test_failing_task_is_retried_once_then_reported(tmp_path):
    cfg, videos = _setup(tmp_path, ["bad", "good"])
    (cfg.work / "fail_train_bad").touch()
    out = tmp_path / "summary"
    s = B.run_batch(cfg, videos, out, steps=TINY)
    calls = _calls(cfg)
    assert [c for c in calls if c.startswith("bad")] == ["bad prepare", "bad train", "bad train"]
    assert [c for c in calls if c.startswith("good")] == ["good prepare", "good train", "good eval"]
    bad, good = s["clips"]
    assert good["status"] == "ok" and B.failed_clips(s) == ["bad"]
    assert bad["status"] == "failed"
    assert bad["error"] == {"step": "train", "attempts": 2, "message": "RuntimeError: bad clip bad"}
    assert "| bad | failed at train: RuntimeError: bad clip bad |" in out.with_suffix(".md").read_text()
    assert (cfg.work / "bad" / "train.log").read_text().count("RuntimeError: bad clip bad") == 2

    B.run_batch(cfg, videos, out, steps=TINY)  # a failed clip is not retried by a plain rerun …
    assert _calls(cfg) == calls
    (cfg.work / "fail_train_bad").unlink()
    cfg.retry_failed = True  # … but on request, from the step that failed
    s = B.run_batch(cfg, videos, out, steps=TINY)
    assert _calls(cfg)[len(calls) :] == ["bad train", "bad eval"] and B.failed_clips(s) == []


def test_step_timeout_counts_as_a_failure(tmp_path):
    cfg, videos = _setup(tmp_path, ["slow"], step_timeout_minutes=0.005)
    (cfg.work / "sleep_prepare_slow").touch()
    s = B.run_batch(cfg, videos, tmp_path / "s", steps=TINY)
    assert _calls(cfg) == ["slow prepare"] * 2
    assert s["clips"][0]["error"]["message"] == "StepTimeout: timed out after 0 s"


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    assert cli_main(["batch", str(tmp_path / "missing.mp4"), "--work", str(work)]) == 2
    assert "nerfvc batch: error: no such video:" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert cli_main(["batch", str(broken), "--work", str(work), "--eval", "--codecs x999"]) == 2
    assert "unknown codec(s) x999" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    assert cli_main(["batch", str(broken), "--work", str(work), "--ray", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nerfvc batch: error: --ray needs the optional dependency ray") and "\n" not in err
    # the real prepare fails on a file that is no video: retried, reported, exit 1, summary written
    assert cli_main(["batch", str(broken), "--work", str(work), "--minutes", "1"]) == 1
    assert "0/1 clips ok; not ok: broken" in capsys.readouterr().out
    row = json.loads((work / "summary.json").read_text())["clips"][0]
    assert row["status"] == "failed" and row["error"]["step"] == "prepare" and row["error"]["attempts"] == 2


@pytest.fixture(scope="module")
def local_ray():
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install -r requirements-cluster.txt)")
    import ray

    # the tiny steps live in this test module, which Ray workers cannot import: send them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": ENV})
    yield ray
    ray.shutdown()


@pytest.mark.realtime  # a local Ray cluster and its workers: `make test` runs it alone, after the rest
def test_ray_matches_sequential_and_retries_a_killed_worker(tmp_path, local_ray, capsys):
    seq_cfg, videos = _setup(tmp_path / "seq", ["alice", "bob"])
    seq = B.run_batch(seq_cfg, videos, tmp_path / "seq" / "summary", steps=TINY)
    ray_cfg, _ = _setup(tmp_path / "ray", [])
    (ray_cfg.work / "crash_train_bob").touch()  # bob's first training attempt kills its worker
    s = B.run_batch(ray_cfg, videos, tmp_path / "ray" / "summary", steps=TINY, ray="auto")
    assert s["executor"].startswith("Ray (auto, 2 CPUs, 1 per task)")
    assert _rows(s) == _rows(seq) and B.failed_clips(s) == []
    assert sorted(_calls(ray_cfg)) == sorted([*_calls(seq_cfg), "bob train"])
    log = (ray_cfg.work / "bob" / "train.log").read_text()
    assert "attempt 1" in log and "attempt 2" in log
    assert "bob: train failed (WorkerCrashedError: " in capsys.readouterr().out
    assert local_ray.is_initialized()  # a Ray the caller started is left running


def test_eval_step_runs_the_library_eval_with_the_batch_options(tmp_path, monkeypatch):
    """``nerfvc batch`` runs ``nerfvc eval`` through the library (no CLI module), with its options."""
    from nerfvc.eval import run as eval_run

    seen = []
    monkeypatch.setattr(eval_run, "run_eval", seen.append)
    cfg = B.BatchConfig(work=tmp_path, size=128, kbps="0.8,1.5", codecs="x265", max_frames=10, dists_frames=2)
    p = B.ClipPaths.of(cfg, "alice")
    B.eval_step(cfg, tmp_path / "alice.mp4", p)
    want = dict(sizes="128", kbps="0.8,1.5", codecs="x265", dists_frames=2, max_frames=10)
    assert seen == [
        eval_run.EvalOptions(str(tmp_path / "alice.mp4"), str(p.report), model=str(p.model), **want)
    ]


def test_a_training_recipe_names_its_own_model_and_report_and_reaches_train(tmp_path, monkeypatch):
    """``--train "--fine-hidden 32"``: the clip's dataset is shared, the model and report are the recipe's,
    and ``nerfvc train`` gets the recipe with the batch's budget."""
    from nerfvc.train import trainer

    base = B.ClipPaths.of(B.BatchConfig(work=tmp_path, minutes=10), "alice")
    cfg = B.BatchConfig(work=tmp_path, minutes=10, train="--fine-hidden 32 --error-frac 0.5")
    p = B.ClipPaths.of(cfg, "alice")
    assert p.dataset == base.dataset
    assert p.model.name == "model_10min_fine-hidden-32-error-frac-0.5" and p.model != base.model
    assert p.report.name == "report_10min_fine-hidden-32-error-frac-0.5_256"
    seen = {}
    monkeypatch.setattr(
        trainer, "train", lambda d, m, tcfg, mcfg: seen.update(m=m, t=tcfg, h=mcfg.fine.hidden)
    )
    B.train_step(cfg, tmp_path / "alice.mp4", p)
    assert seen["m"] == p.model and seen["h"] == 32
    assert (seen["t"].minutes, seen["t"].error_frac, seen["t"].eval_frames) == (10, 0.5, 0)
    for bad in ("--minutes 3", "--bogus", "--fine-hidden x"):
        with pytest.raises(B.InputError):
            B.parse_train_options(bad)


def test_refine_reaches_eval_in_its_own_report_and_old_reports_stay_valid(tmp_path, monkeypatch):
    """``--eval "--refine 10"``: the sender's refinement reaches ``nerfvc eval``, its report sits beside the
    plain one (same model), a plain report is not taken for a refined one, and a plain batch's stamp is the
    one it was before the option existed."""
    from nerfvc.eval import run as eval_run

    opts = B.parse_eval_options("--sizes 128 --refine 10")
    assert opts == {"size": 128, "refine": 10}
    with pytest.raises(B.InputError, match="--refine"):
        B.parse_eval_options("--refine -1")
    plain = B.BatchConfig(work=tmp_path, minutes=1, size=128)
    refined = dataclasses.replace(plain, **opts)
    p, q = B.ClipPaths.of(plain, "alice"), B.ClipPaths.of(refined, "alice")
    assert (q.model, q.dataset) == (p.model, p.dataset)
    assert (p.report.name, q.report.name) == ("report_1min_128", "report_1min_128_refine10")
    assert "refine" not in plain.eval_params() and refined.eval_params()["refine"] == 10
    seen = []
    monkeypatch.setattr(eval_run, "run_eval", seen.append)
    B.eval_step(refined, tmp_path / "alice.mp4", q)
    assert seen[0].refine == 10 and seen[0].out == str(q.report)
    # a finished plain report, stamped, counts for the plain batch only
    write_json_atomic(p.report / "results.json", {"systems": {}})
    write_json_atomic(p.report / "bench.json", {"params": plain.eval_params()})
    assert B.report_done(p.report, plain.eval_params())
    assert not B.report_done(p.report, refined.eval_params())
    assert "report_1min_128_refine10" in B.markdown(
        {
            "title": "t",
            "config": {**dataclasses.asdict(refined), "work": str(tmp_path)},
            "command": "c",
            "executor": "e",
            "wall_minutes": 0.0,
            "step_minutes": 0.0,
            "clips": [],
        }
    )


def test_the_frame_step_choice_reaches_eval_and_reports_of_the_rule_are_redone(tmp_path, monkeypatch):
    """``--eval "--frame-step-by rule"`` reaches ``nerfvc eval``; a report made before the frame step was
    chosen by rendering (stamped without the option) counts for a ``rule`` batch, not for the default."""
    from nerfvc.eval import run as eval_run

    assert B.parse_eval_options("--frame-step-by rule") == {"frame_step_by": "rule"}
    with pytest.raises(B.InputError):
        B.parse_eval_options("--frame-step-by guess")
    default = B.BatchConfig(work=tmp_path, minutes=1, size=128)
    rule = dataclasses.replace(default, frame_step_by="rule")
    assert default.frame_step_by == "render" and default.eval_params()["frame_step_by"] == "render"
    p = B.ClipPaths.of(default, "alice")
    write_json_atomic(p.report / "results.json", {"systems": {}})
    old_stamp = rule.eval_params()  # what a report of the rule's time was stamped with
    assert "frame_step_by" not in old_stamp
    write_json_atomic(p.report / "bench.json", {"params": old_stamp})
    assert B.report_done(p.report, rule.eval_params()) and not B.report_done(p.report, default.eval_params())
    seen = []
    monkeypatch.setattr(eval_run, "run_eval", seen.append)
    B.eval_step(rule, tmp_path / "alice.mp4", p)
    B.eval_step(default, tmp_path / "alice.mp4", p)
    assert [o.frame_step_by for o in seen] == ["rule", "render"]


def test_the_pose_refinement_reaches_eval_and_reports_with_the_trackers_poses_are_redone(
    tmp_path, monkeypatch
):
    """``--eval "--refine-pose N"`` reaches ``nerfvc eval`` (default: the eval's own default); a report made
    before the sender refined the pose (stamped without the option) counts for ``--refine-pose 0`` only."""
    from nerfvc.eval import run as eval_run
    from nerfvc.eval.options import EvalOptions

    assert B.parse_eval_options("--refine-pose 0") == {"refine_pose": 0}
    with pytest.raises(B.InputError, match="--refine-pose"):
        B.parse_eval_options("--refine-pose -1")
    default = B.BatchConfig(work=tmp_path, minutes=1, size=128)
    tracked = dataclasses.replace(default, refine_pose=0)
    assert default.refine_pose == EvalOptions.refine_pose > 0
    assert (
        default.eval_params()["refine_pose"] == default.refine_pose
        and "refine_pose" not in tracked.eval_params()
    )
    p = B.ClipPaths.of(default, "alice")
    write_json_atomic(p.report / "results.json", {"systems": {}})
    write_json_atomic(p.report / "bench.json", {"params": tracked.eval_params()})  # an older report's stamp
    assert B.report_done(p.report, tracked.eval_params()) and not B.report_done(
        p.report, default.eval_params()
    )
    seen = []
    monkeypatch.setattr(eval_run, "run_eval", seen.append)
    B.eval_step(tracked, tmp_path / "alice.mp4", p)
    B.eval_step(default, tmp_path / "alice.mp4", p)
    assert [o.refine_pose for o in seen] == [0, default.refine_pose]
    shell = {
        "title": "t",
        "command": "c",
        "executor": "e",
        "wall_minutes": 0.0,
        "step_minutes": 0.0,
        "clips": [],
    }
    for cfg, shown in ((tracked, True), (default, False)):  # the summary names a non-default choice
        text = B.markdown({**shell, "config": {**dataclasses.asdict(cfg), "work": str(tmp_path)}})
        assert ("--refine-pose 0" in text) == shown and ("--refine-pose" in text) == shown
