"""Forged headers and packet indices: decode returns frames bounded by the stream's size or raises the
project's error (never a foreign exception, a huge allocation or a long concealment loop)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nerfvc.codec import StreamDecoder, decode_stream, encode_stream
from nerfvc.codec.framing import (
    _HEADER,
    HEADER_SIZE,
    MAX_GROUP,
    TRUNCATED_SLACK,
    TYPE_DELTA,
    TYPE_KEY,
    build_packet,
    fp_bytes,
    frame_capacity,
)
from nerfvc.errors import BitstreamError, NerfvcError

from .conftest import FP


@pytest.fixture(scope="module")
def stream(feats, tables) -> bytes:
    code, pose = feats[0][:16], feats[1][:16]
    return encode_stream(tables, FP, code, pose, keyframe_interval=8, frames_per_packet=2)


def _with_header(data: bytes, **fields: int) -> bytes:
    """``data`` with header fields replaced and the header CRC recomputed (so only the fields are wrong)."""
    names = ["magic", "ver", "mode", "fp", "fps_milli", "dim", "pose_dim", "step", "keyint", "nframes"]
    values = dict(zip(names, _HEADER.unpack(data[: _HEADER.size])))
    values.update(fields)
    body = _HEADER.pack(*(values[n] for n in names))
    return body + struct.pack(">I", zlib.crc32(body)) + data[HEADER_SIZE:]


def _decode_bounded(data: bytes, tables) -> None:
    """The invariant: frames no more than the stream can hold, or a :class:`NerfvcError`."""
    try:
        code, pose, rep = decode_stream(data, tables, FP)
    except NerfvcError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert len(code) == len(pose) == rep.num_frames <= frame_capacity(len(data)) + TRUNCATED_SLACK
    assert np.all(np.isfinite(code)) and np.all(np.isfinite(pose))


def test_huge_header_frame_count_is_a_clean_error(stream, tables):
    for n in (2**31, 2**32 - 1, 1_000_000):
        with pytest.raises(BitstreamError, match="claims"):
            decode_stream(_with_header(stream, nframes=n), tables, FP)


def test_far_keyframe_index_is_not_allocated(stream, tables):
    fp = fp_bytes(FP)
    for index in (10**7, 2**32 - 1, 2**32 - 8):
        forged = _with_header(stream, nframes=0) + build_packet(fp, TYPE_KEY, index, b"", 0)
        code, _, rep = decode_stream(forged, tables, FP)
        assert rep.num_frames == len(code) == 16


def test_header_frame_rate_and_step_bounded(stream, tables):
    for fps_milli in (1, 999, 240_001, 2**32 - 1):
        with pytest.raises(BitstreamError, match="frame rate"):
            decode_stream(_with_header(stream, fps_milli=fps_milli), tables, FP)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fps_milli=st.integers(0, 2**32 - 1),
    dim=st.sampled_from([0, 10, 11, 2**16 - 1]),
    pose_dim=st.sampled_from([0, 6, 12, 255]),
    mode=st.integers(0, 255),
    step=st.integers(-128, 127),
    keyint=st.integers(0, 2**16 - 1),
    nframes=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
)
def test_any_header_decodes_bounded_or_errors(
    stream, tables, fps_milli, dim, pose_dim, mode, step, keyint, nframes
):
    data = _with_header(
        stream,
        fps_milli=fps_milli,
        dim=dim,
        pose_dim=pose_dim,
        mode=mode,
        step=step,
        keyint=keyint,
        nframes=nframes,
    )
    _decode_bounded(data, tables)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nframes=st.one_of(st.just(0), st.integers(0, 2**32 - 1)),
    packets=st.lists(
        st.tuples(
            st.sampled_from([TYPE_DELTA, TYPE_KEY]),
            st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),
            st.integers(1, MAX_GROUP),
            st.integers(-128, 127),
            st.binary(max_size=24),
        ),
        max_size=4,
    ),
    at=st.integers(0, 64),
)
def test_forged_packet_indices_decode_bounded_or_error(stream, tables, nframes, packets, at):
    fp = fp_bytes(FP)
    forged = b"".join(build_packet(fp, k, i, p, s, count=c) for k, i, c, s, p in packets)
    pos = min(HEADER_SIZE + at, len(stream))
    data = _with_header(stream, nframes=nframes)
    _decode_bounded(data[:pos] + forged + data[pos:], tables)
    dec = StreamDecoder(tables, FP)  # the live per-packet decoder: at most a packet's frames per packet
    dec.read_header(stream)
    for k, i, c, s, p in packets:
        try:
            assert len(dec.decode_frames(build_packet(fp, k, i, p, s, count=c))) <= c
        except NerfvcError:
            pass
