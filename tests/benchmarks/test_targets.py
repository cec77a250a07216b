"""benchmarks/targets.py --against: points matched by clip, size and rate; each metric in its direction."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "targets", Path(__file__).resolve().parents[2] / "benchmarks" / "targets.py"
)
targets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(targets)


def row(clip: str, size: int, label: str, psnr: float, lpips: float, lost: list[str]) -> dict:
    metrics = dict.fromkeys(targets.ISSUE16, 0.5) | {"psnr": psnr, "lpips": lpips}
    return {"clip": clip, "size": size, "label": label, "nerfvc": metrics, "loses_to_freeze": lost}


def test_against_matches_points_and_counts_improvements_in_each_metrics_direction():
    old = [
        row("a", 256, "1 kbps", 25.0, 0.10, ["dists"]),
        row("a", 512, "1 kbps", 24.0, 0.20, []),
        row("gone", 256, "1 kbps", 20.0, 0.30, []),
    ]
    new = [
        row("a", 256, "1 kbps", 26.0, 0.12, []),  # PSNR up (better), LPIPS up (worse)
        row("a", 512, "1 kbps", 23.0, 0.15, []),  # PSNR down, LPIPS down (better)
        row("new", 256, "1 kbps", 30.0, 0.01, []),
    ]
    cmp = targets.against(new, old)
    assert [(p["clip"], p["size"]) for p in cmp["points"]] == [("a", 256), ("a", 512)]
    assert cmp["metrics"]["psnr"] == {"mean_b_minus_a": 0.0, "b_better": 1, "pairs": 2}
    assert cmp["metrics"]["lpips"]["b_better"] == 1
    assert abs(cmp["metrics"]["lpips"]["mean_b_minus_a"] - (-0.015)) < 1e-12
    assert cmp["metrics"]["ssim"]["b_better"] == 0  # unchanged is not improved
    assert (cmp["old_points_beating_freeze"], cmp["new_points_beating_freeze"]) == (1, 2)
    text = "\n".join(targets.against_markdown(cmp, "old.json"))
    assert "25 → 26" in text and "1 → 2 of 2" in text
