"""Tiny fake ``nerfvc eval --keep-videos`` reports (synthetic frames, written with the project's FFmpeg
helper) and tests built from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nerfvc.eval.video import VideoKeeper
from nerfvc.mos.build import build_test


def frames(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """A moving colour pattern, uint8 RGB ``(n, size, size, 3)``."""
    yy, xx = np.mgrid[:size, :size]
    f = [
        np.stack([128 + 100 * np.sin(xx / 5 + t / 2 + seed), 128 + 100 * np.cos(yy / 4 - t / 3),
                  128 + 60 * np.sin((xx + yy) / 7)], -1)
        for t in range(n)
    ]  # fmt: skip
    return np.clip(f, 0, 255).astype(np.uint8)


def fake_eval(
    root: Path,
    name: str = "rep",
    *,
    nerfvc: tuple[float, ...] = (0.8, 10.0),
    codecs: dict[str, tuple[float, ...]] | None = None,
    n: int = 8,
    size: int = 32,
) -> Path:
    """An eval report directory with kept videos and a ``results.json`` that indexes them."""
    out = root / name
    keeper = VideoKeeper(out, 25.0)
    gt = frames(n, size)
    keeper.reference(gt)
    rng = np.random.default_rng(0)
    for k in nerfvc:
        keeper.add(
            "nerfvc", f"target {k}", k, np.clip(gt + rng.integers(-20, 20, gt.shape), 0, 255).astype(np.uint8)
        )
    for c, rates in (codecs if codecs is not None else {"x265": (6.0, 12.0), "vvenc": (5.0,)}).items():
        for k in rates:
            keeper.add(c, f"crf {k:g}", k, (gt // 16 * 16).astype(np.uint8))
    (out / "results.json").write_text(json.dumps({"video": f"/clips/{name}.mp4", "videos": keeper.index()}))
    return out


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """A test built once from two fake reports (orders for 4 raters); copy it before voting."""
    root = tmp_path_factory.mktemp("mos")
    dirs = [fake_eval(root, "a"), fake_eval(root, "b", nerfvc=(1.0,), codecs={"x265": (6.0,)})]
    build_test(dirs, root / "test", seconds=0.2, raters=4, seed=7)
    return root / "test"


@pytest.fixture
def test_dir(built, tmp_path) -> Path:
    """A fresh copy of the built test (no votes)."""
    return Path(shutil.copytree(built, tmp_path / "test"))
