"""Classic-codec baselines: real bitrate from the stream size, right number of decoded frames."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.eval import baselines as B
from nerfvc.eval.video import resize_frames


@pytest.fixture(scope="module")
def tiny(german) -> np.ndarray:
    return resize_frames(german[400:406], 64)


@pytest.mark.parametrize("codec", sorted(B.CODECS))
def test_tiny_encode_real_bitrate(tiny, codec, tmp_path):
    path = tmp_path / f"s.{B.CODECS[codec].fmt}"
    r = B.encode(tiny, codec, B.CODECS[codec].sweep[-1], keep=path)
    assert r.frames.shape == tiny.shape and r.frames.dtype == np.uint8
    assert r.num_bytes == path.stat().st_size > 0
    assert r.kbps == pytest.approx(path.stat().st_size * 8 / (len(tiny) / 25.0) / 1000)
    assert np.abs(r.frames.astype(int) - tiny).mean() < 20  # decoded pictures resemble the input
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_kept_stream_appears_only_when_it_decodes(tiny, tmp_path, monkeypatch):
    def broken(*args):
        raise B.InputError("decoder failed")

    monkeypatch.setattr(B, "decode_stream", broken)
    with pytest.raises(B.InputError):
        B.encode(tiny, "x265", 40, keep=tmp_path / "s.hevc")
    assert not list(tmp_path.iterdir())  # neither the stream nor a temporary file


def test_floor_is_the_lowest_rate(tiny):
    lo = B.floor(tiny, "x265")
    hi = B.encode(tiny, "x265", 30)
    assert lo.q == 51 and lo.kbps < hi.kbps


def test_freeze_and_next_frame(tiny):
    fz = B.freeze_frame(tiny)
    assert fz.frames.shape == tiny.shape
    assert (fz.frames == fz.frames[0]).all()
    assert fz.kbps == pytest.approx(fz.num_bytes * 8 / (len(tiny) / 25.0) / 1000)
    nx = B.next_frame(tiny[1:], tiny[0])
    np.testing.assert_array_equal(nx, tiny[:-1])
