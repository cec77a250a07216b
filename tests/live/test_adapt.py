"""The receiver's render-size controller: render below the display size when the renderers fall behind."""

from __future__ import annotations

import asyncio
import io
import itertools
import time

import numpy as np
import pytest
from PIL import Image

from nerfvc.live.adapt import RenderSizeController, upscale
from nerfvc.live.interfaces import DebugDiscRenderer
from nerfvc.live.receiver import Receiver
from tests.live.helpers import run_call
from tests.live.standins import StandInDecoder


def _run(ctl: RenderSizeController, seconds_per_pixel: float, frames: int) -> list[int]:
    """Feed ``frames`` renders whose time is ``seconds_per_pixel`` × size²; the sizes chosen, in order."""
    sizes = []
    for _ in range(frames):
        size = ctl.size
        sizes.append(size)
        ctl.observe(size, seconds_per_pixel * size * size)
    return sizes


def test_a_renderer_that_keeps_up_stays_at_the_display_size():
    ctl = RenderSizeController(256, fps=25, workers=2)
    # 256² in 50 ms: two renderers give 40 fps ≥ 25
    assert set(_run(ctl, 0.05 / 256**2, 30)) == {256}


def test_a_slow_renderer_drops_to_the_largest_size_that_fits_and_recovers_step_by_step():
    ctl = RenderSizeController(256, fps=25, workers=1)
    cost = 0.06 / 256**2  # 256² in 60 ms: 17 fps with one renderer
    sizes = _run(ctl, cost, 40)
    budget_size = (0.04 / cost) ** 0.5  # 209 px renders in 40 ms
    assert sizes[0] == 256 and sizes[-1] % 16 == 0
    assert 0.8 * budget_size <= sizes[-1] <= budget_size
    assert all(s <= budget_size for s in sizes[5:])
    fast = _run(ctl, cost / 4, 40)  # the CPU freed up: back to the display size, one step at a time
    assert fast[-1] == 256
    assert all(b - a <= 16 for a, b in itertools.pairwise(fast))


def test_never_below_the_minimum_fraction_and_follows_display_and_fps_changes():
    ctl = RenderSizeController(256, fps=25, workers=1)
    assert _run(ctl, 1.0, 5)[-1] == ctl.min_size == 192  # hopelessly slow: the floor (3/4), not less
    ctl.set_display_size(512)
    assert ctl.size == 512 and ctl.min_size == 384
    ctl2 = RenderSizeController(256, fps=25, workers=1)
    cost = 0.06 / 256**2  # 256² in 60 ms: too slow for 25 fps, fine for 12.5
    assert _run(ctl2, cost, 20)[-1] < 256
    ctl2.set_fps(12.5)
    assert _run(ctl2, cost, 20)[-1] == 256
    with pytest.raises(ValueError):
        RenderSizeController(256, fps=0)


def test_upscale_is_lanczos_to_the_display_size_and_identity_at_it():
    rgb = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert upscale(rgb, 96) is rgb
    up = upscale(rgb, 128)
    assert up.shape == (128, 128, 3) and up.dtype == np.uint8
    flat = np.full((96, 96, 3), 77, np.uint8)
    assert np.all(upscale(flat, 128) == 77)


class PixelCostRenderer(DebugDiscRenderer):
    """A debug renderer whose time grows with the pixels it draws; records each size asked for."""

    def __init__(self, seconds_per_pixel: float) -> None:
        super().__init__()
        self.seconds_per_pixel = seconds_per_pixel
        self.sizes: list[int] = []

    def render(self, expression: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
        self.sizes.append(width)
        time.sleep(self.seconds_per_pixel * width * height)
        return super().render(expression, pose, width, height)


@pytest.mark.parametrize("adapt", [True, False])
def test_a_slow_receiver_renders_smaller_and_still_shows_display_sized_frames(clip, adapt):
    short = (*tuple(a[:50] for a in clip[:3]), clip[3])
    renderer = PixelCostRenderer(0.06 / 128**2)  # 128² in 60 ms: 2/3 of the 25 fps call's rate
    rx = Receiver(StandInDecoder, renderer, size=128, adapt_size=adapt)
    shown: list[tuple[int, tuple[int, ...]]] = []
    publish = rx._publish

    def record(panel, jpeg, meta):
        if "i" in meta:
            shown.append((meta["render_size"], np.asarray(Image.open(io.BytesIO(jpeg))).shape))
        publish(panel, jpeg, meta)

    rx._publish = record
    asyncio.run(run_call(short, receiver=rx))
    asyncio.run(rx.stop())
    assert len(shown) >= 5
    assert {shape for _, shape in shown} == {(128, 128, 3)}  # always the display size
    if adapt:
        assert renderer.sizes[0] == 128 and max(renderer.sizes[2:]) < 128
        assert min(renderer.sizes) >= 96  # 3/4 of the display size at most
        assert rx.summary()["frames_below_display"] >= len(shown) - 2
    else:
        assert set(renderer.sizes) == {128} and rx.summary()["frames_below_display"] == 0
