"""Report generation on a tiny synthetic run produces every file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nerfvc.eval import baselines as B
from nerfvc.eval.metrics import evaluate, prepare_reference
from nerfvc.eval.report import RDPoint, build_report
from nerfvc.eval.video import VideoKeeper
from nerfvc.io.video import read_frame_range as read_frames


def _synthetic(n: int = 6, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    frames = [
        np.stack(
            [
                128 + 100 * np.sin(xx / 9 + t / 3),
                128 + 100 * np.cos(yy / 7 - t / 5),
                128 + 60 * np.sin((xx + yy) / 11),
            ],
            -1,
        )
        for t in range(n)
    ]
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_report_writes_every_file(tmp_path):
    gt = _synthetic()
    ref = prepare_reference(gt, face=False)
    systems: dict[str, list] = {"x265": []}
    for q in (51, 35):
        r = B.encode(gt, "x265", q)
        systems["x265"].append(
            RDPoint.from_eval(evaluate(ref, r.frames, bitrate_kbps=r.kbps), r.kbps, frames=r.frames)
        )
    rng = np.random.default_rng(0)
    ours = np.clip(gt.astype(int) + rng.integers(-10, 10, gt.shape), 0, 255).astype(np.uint8)
    systems["nerfvc"] = [
        RDPoint.from_eval(evaluate(ref, ours, bitrate_kbps=1.0), 1.0, frames=ours, label="ours")
    ]
    fz = B.freeze_frame(gt)
    systems["freeze"] = [
        RDPoint.from_eval(evaluate(ref, fz.frames, bitrate_kbps=fz.kbps), fz.kbps, frames=fz.frames)
    ]
    systems["next"] = [RDPoint.from_eval(evaluate(ref, B.next_frame(gt, gt[0])), None)]
    systems["FOMM"] = [{"kbps": 30.0, "psnr": 20.0, "lpips": 0.2}]
    files = build_report(
        tmp_path / "rep", gt, systems, resolution={64: systems, 128: {"x265": [{"kbps": 9.0, "lpips": 0.3}]}},
        cited=["FOMM"],
    )  # fmt: skip
    for kind in (
        "rd_psnr",
        "rd_ssim",
        "rd_lpips",
        "rd_dists",
        "resolution",
        "grid",
        "video",
        "results",
        "html",
    ):
        assert files[kind].is_file() and files[kind].stat().st_size > 0, kind
    res = json.loads(files["results"].read_text())
    assert set(res["systems"]) == {"x265", "nerfvc", "freeze", "next", "FOMM"}
    assert 0 < res["systems"]["nerfvc"][0]["dists"] < 1 and "dists_x_kbps" in res["systems"]["nerfvc"][0]
    page = files["html"].read_text()
    assert "freeze" in page and "(cited, not measured here)" in page and "grid.png" in page
    assert "<th>DISTS</th>" in page


def test_upscale_notes_and_labels():
    from nerfvc.eval.report import _label
    from nerfvc.eval.run import upscale_notes

    notes = upscale_notes((512, 480), [256, 480, 512, 1024])
    assert len(notes) == 2 and notes[0].startswith(
        "512 px ground truth is a bicubic upscale of the 480x512 px"
    )
    assert notes[1].startswith("1024 px") and upscale_notes((512, 512), [128, 256, 512]) == []
    # label bands keep an even height (yuv420p video) and grow with big frames
    heights = [_label(np.zeros((w, w, 3), np.uint8), "x").shape[0] - w for w in (96, 512, 720, 1024)]
    assert heights == [28, 28, 40, 56]


def test_eval_baselines_command_on_a_short_clip(tmp_path):
    import argparse

    from nerfvc.eval import commands

    from .conftest import DATA, need

    clip = need(DATA / "clips" / "mimictalk_may_5s.mp4")
    ap = argparse.ArgumentParser()
    commands.register(ap.add_subparsers())
    out = tmp_path / "rep"
    argv = ["eval-baselines", str(clip), "-o", str(out), "--sizes", "96", "--codecs", "x265", "--points", "1"]
    args = ap.parse_args([*argv, "--no-face", "--dists-frames", "2", "--keep-videos"])
    assert args.func(args) == 0
    for name in (
        "report.html",
        "results.json",
        "grid.png",
        "side_by_side.mp4",
        "rd_psnr.png",
        "resolution.png",
    ):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    assert all(p["dists"] is not None for p in res["systems"]["x265"] + res["systems"]["freeze"])
    assert not any("upscale" in n for n in res["notes"]) and any(
        "DISTS is the mean over 2" in n for n in res["notes"]
    )
    html = (out / "report.html").read_text()
    assert "FOMM" in html and "cited, not measured here" in html  # the paper's rows are marked as such
    # --keep-videos: the ground truth and the codec point as lossless videos, indexed in results.json
    kept = res["videos"]["96"]
    assert kept["frames"] == 25 and kept["fps"] == 25 and set(kept["systems"]) == {"x265"}
    (x265,) = kept["systems"]["x265"]
    assert x265["kbps"] == res["systems"]["x265"][0]["kbps"] and x265["label"] == "crf 51"
    for rel in (kept["ground_truth"], x265["file"]):
        assert read_frames(out / rel).shape == (25, 96, 96, 3)


def test_kept_videos_are_lossless(tmp_path):
    keeper = VideoKeeper(tmp_path, 30.0)
    gt = _synthetic(5, 48)
    keeper.reference(gt)
    keeper.add("nerfvc", "0.8 kbps", 0.81, gt[::-1])
    index = keeper.index()["48"]
    assert index["fps"] == 30.0 and index["frames"] == 5
    assert np.array_equal(read_frames(tmp_path / index["ground_truth"]), gt)
    assert np.array_equal(read_frames(tmp_path / index["systems"]["nerfvc"][0]["file"]), gt[::-1])
    with pytest.raises(ValueError, match="expected 5"):
        keeper.add("x265", "CRF 51", 5.0, gt[:3])
