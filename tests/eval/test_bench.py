"""The per-clip bench: which steps it reruns, how a failure becomes a row, what the summary says."""

from __future__ import annotations

import json
from pathlib import Path

from nerfvc.eval import bench as B
from nerfvc.fsutil import write_json_atomic
from nerfvc.modeldir import finalize_model_dir


class FakeNerfvc:
    """Stands in for the ``nerfvc`` subprocess: writes what each real step leaves on disk, records calls."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.timeouts: list[float] = []
        self.fail = fail

    def __call__(self, args: list[str], log: Path, timeout_s: float) -> int:
        step = args[0]
        self.calls.append(step)
        self.timeouts.append(timeout_s)
        out = Path(args[args.index("-o") + 1])
        if step == self.fail:
            log.write_text("Traceback …\nnerfvc prepare: error: found 2 faces in the first frame\n")
            return 2
        out.mkdir(parents=True, exist_ok=True)
        if step == "prepare":
            write_json_atomic(out / "manifest.json", {"format": "nerfvc-dataset", "complete": True})
        elif step == "train":
            (out / "nerf.safetensors").write_bytes(b"weights")
            finalize_model_dir(out)
        elif step == "eval":
            pts = {
                "nerfvc": [
                    {"label": "target 1.5 kbps", "kbps": 1.4, "psnr": 25.0, "lpips": 0.1, "dists": 0.2}
                ],
                "x265": [
                    {"label": "CRF 40", "kbps": 20.0, "psnr": 28.0},
                    {"label": "CRF 51", "kbps": 9.0, "psnr": 24.0, "csim": 0.6},
                ],
                "freeze": [{"label": "intra", "kbps": 3.0, "psnr": 22.0, "aucon": "inf"}],
                "next": [{"label": "late", "kbps": None, "psnr": 35.0}],
            }
            write_json_atomic(out / "results.json", {"systems": pts, "num_frames": 10})
        return 0


def _cfg(tmp_path: Path, **kw) -> B.BenchConfig:
    return B.BenchConfig(work=tmp_path / "work", minutes=1, max_frames=10, **kw)


def test_resume_runs_only_missing_steps(tmp_path):
    cfg, video = _cfg(tmp_path), tmp_path / "clip_a.mp4"
    fake = FakeNerfvc()
    assert B.pending_steps(cfg, "clip_a") == ["prepare", "train", "eval"]
    assert B.run_clip(cfg, video, fake, say=lambda m: None).ran == ["prepare", "train", "eval"]
    B.run_clip(cfg, video, fake, say=lambda m: None)
    assert fake.calls == ["prepare", "train", "eval"]  # second run: everything cached
    assert fake.timeouts == [120 * 60, 121 * 60, 120 * 60]  # train's timeout comes on top of its budget

    paths = B.ClipPaths.of(cfg, "clip_a")
    # killed during eval: results.json may be there, the stamp written after it is not → eval only
    (paths.report / "bench.json").unlink()
    assert B.pending_steps(cfg, "clip_a") == ["eval"]
    # a model interrupted mid-training has no manifest; a tampered one fails verification → train + eval again
    (paths.model / "nerf.safetensors").write_bytes(b"corrupt")
    assert B.pending_steps(cfg, "clip_a") == ["train", "eval"]
    fake.calls.clear()
    B.run_clip(cfg, video, fake, say=lambda m: None)
    assert fake.calls == ["train", "eval"]
    # other eval options: only the eval reruns; another training budget: a new model dir
    assert B.pending_steps(_cfg(tmp_path, kbps="0.8"), "clip_a") == ["eval"]
    assert B.pending_steps(B.BenchConfig(work=cfg.work, minutes=5, max_frames=10), "clip_a") == [
        "train",
        "eval",
    ]
    # a dataset that prepare left incomplete is redone (prepare resumes it itself)
    write_json_atomic(paths.dataset / "manifest.json", {"complete": False})
    (paths.report / "bench.json").unlink()
    assert B.pending_steps(cfg, "clip_a") == ["prepare", "train", "eval"]


def test_failure_is_a_row_and_not_retried(tmp_path):
    cfg = _cfg(tmp_path)
    videos = [tmp_path / "two_faces.mp4", tmp_path / "good.mp4"]
    fake = FakeNerfvc(fail="prepare")
    out = tmp_path / "res" / "clips"
    B.run_bench(cfg, videos[:1], out, runner=fake)
    fake.fail = None
    s = B.run_bench(cfg, videos, out, runner=fake)
    assert fake.calls == ["prepare", "prepare", "train", "eval"]  # two_faces not retried, good ran fully
    bad, good = s["clips"]
    assert bad["status"] == "failed" and bad["error"]["step"] == "prepare" and bad["error"]["exit_code"] == 2
    assert "found 2 faces" in bad["error"]["message"]
    assert good["status"] == "ok" and good["nerfvc"]["kbps"] == 1.4 and good["nerfvc"]["dists"] == 0.2
    assert good["x265"] == {"label": "CRF 51", **dict.fromkeys(B.ROW_METRICS), "kbps": 9.0, "psnr": 24.0,
                            "csim": 0.6}  # fmt: skip
    assert set(good["seconds"]) == {"prepare", "train", "eval"}
    md = out.with_suffix(".md").read_text()
    assert "| good | ok | 1.4 / 9 / 3 | 25.0 / 24.0 / 22.0 |" in md
    assert "| two_faces | failed at prepare:" in md and "found 2 faces" in md
    assert json.loads(out.with_suffix(".json").read_text())["clips"][1]["freeze"]["aucon"] == "inf"
    cfg.retry_failed = True
    B.run_clip(cfg, videos[0], fake, say=lambda m: None)
    assert (
        fake.calls[-3:] == ["prepare", "train", "eval"]
        and not B.ClipPaths.of(cfg, "two_faces").error.exists()
    )


def test_real_runner_reports_the_exit_code_and_log(tmp_path):
    log = tmp_path / "clip" / "prepare.log"
    code = B.run_nerfvc(["prepare", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "ds")], log, 120)
    assert code == 2  # InputError's exit code, not a crash
    text = log.read_text()
    assert text.startswith("$ nerfvc prepare ") and "missing.mp4" in text.splitlines()[-1]
