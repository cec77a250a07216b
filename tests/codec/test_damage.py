"""Bad input: corruption sweep, truncation, loss, header errors. Never a crash, never silently wrong."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.codec import StreamDecoder, StreamEncoder, decode_stream, encode_stream
from nerfvc.codec.coder import reference_stream
from nerfvc.codec.framing import HEADER_SIZE, StreamHeader
from nerfvc.errors import BitstreamError, ModelMismatchError

from .conftest import FP, assert_decoded


@pytest.fixture(scope="module", params=[1, 2, 4], ids=["1fpp", "2fpp", "4fpp"])
def small(request, feats, tables):
    code, pose = feats[0][:12], feats[1][:12]
    data = encode_stream(tables, FP, code, pose, keyframe_interval=4, frames_per_packet=request.param)
    ref = reference_stream(tables, code, pose, 0, keyframe_interval=4)
    return data, ref


def _check_decode(data, tables, ref):
    """Decode damaged bytes: either a clear header error, or frames that are exact or flagged concealed."""
    try:
        code, pose, rep = decode_stream(data, tables, FP)
    except (BitstreamError, ModelMismatchError) as e:
        assert str(e)
        return None
    n = len(ref[0])
    assert len(code) == n and rep.valid.shape == (n,)
    v = rep.valid
    assert_decoded(code[v], ref[0][v])
    assert_decoded(pose[v], ref[1][v])
    assert np.all(np.isfinite(code)) and np.all(np.isfinite(pose))
    return rep


def test_every_byte_flip_is_caught_or_concealed(small, tables):
    data, ref = small
    damaged = 0
    for i in range(len(data)):
        for mask in (0xFF, 0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            rep = _check_decode(bytes(bad), tables, ref)
            if i < HEADER_SIZE:
                assert rep is None  # header damage is always an error
            else:
                assert rep is not None and (rep.concealed > 0 or rep.corrupt_packets > 0)
                damaged += 1
    assert damaged == 3 * (len(data) - HEADER_SIZE)


def test_every_truncation_is_caught_or_concealed(small, tables):
    data, ref = small
    for n in range(len(data)):
        rep = _check_decode(data[:n], tables, ref)
        if n < HEADER_SIZE:
            assert rep is None
        else:
            assert rep is not None and rep.truncated and rep.concealed > 0


def test_header_errors_name_the_problem(small, tables):
    data, _ = small
    with pytest.raises(BitstreamError, match="empty"):
        decode_stream(b"", tables, FP)
    with pytest.raises(BitstreamError, match="magic"):
        decode_stream(b"RIFF" + data[4:], tables, FP)
    with pytest.raises(BitstreamError, match="truncated header"):
        decode_stream(data[:10], tables, FP)
    with pytest.raises(BitstreamError, match=r"version 7 .*reads versions 3, 4"):
        decode_stream(data[:4] + bytes([7]) + data[5:], tables, FP)
    with pytest.raises(ModelMismatchError, match="made for model 0123456789abcdef"):
        decode_stream(data, tables, "fedcba9876543210")
    with pytest.raises(BitstreamError, match="CRC"):
        decode_stream(data[:20] + bytes([data[20] ^ 1]) + data[21:], tables, FP)


def test_packet_damage_per_packet_api(feats, tables):
    code, pose = feats
    enc = StreamEncoder(tables, FP, keyframe_interval=5)
    dec = StreamDecoder(tables, FP)
    dec.read_header(enc.header())
    pkts = [enc.encode(c, p) for c, p in zip(code[:10], pose[:10])]
    dec.decode(pkts[0])
    for bad in (b"", pkts[1][:-1], pkts[1] + b"x", bytes([pkts[1][0] ^ 4]) + pkts[1][1:]):
        with pytest.raises(BitstreamError):
            dec.decode(bad)
    assert dec.stats.corrupt == 4
    # A packet from a stream of another model fails its CRC.
    other = StreamEncoder(tables, "fedcba9876543210")
    with pytest.raises(BitstreamError, match="CRC"):
        dec.decode(other.encode(code[0], pose[0]))


def test_five_percent_loss_recovers_at_keyframes(feats, tables):
    code, pose = feats
    n, keyint = 300, 25
    enc = StreamEncoder(tables, FP, keyframe_interval=keyint)
    dec = StreamDecoder(tables, FP)
    dec.read_header(enc.header())
    ref_code, ref_pose = reference_stream(tables, code, pose, 0, keyint)
    rng = np.random.default_rng(0)
    drop = rng.random(n) < 0.05
    drop[0] = False
    assert 5 <= drop.sum() <= 30
    broken = False
    for i in range(n):
        pkt = enc.encode(code[i], pose[i])
        if drop[i]:
            broken = True
            continue
        f = dec.decode(pkt)
        assert f.index == i
        if i % keyint == 0:
            broken = False
        assert f.concealed == broken
        if not broken:
            assert_decoded(f.code, ref_code[i])
            assert_decoded(f.pose, ref_pose[i])
        else:
            assert np.all(np.isfinite(f.code))
    assert dec.stats.lost == drop.sum()
    # Same through the file decoder: drop packets from the byte stream.
    data = encode_stream(tables, FP, code, pose, keyframe_interval=keyint)
    from nerfvc.codec.framing import parse_packet

    pos, parts = HEADER_SIZE, [data[:HEADER_SIZE]]
    for i in range(n):
        pk = parse_packet(bytes.fromhex(FP), data, pos, next_index=i)
        if not drop[i]:
            parts.append(data[pos : pos + pk.size])
        pos += pk.size
    c, _, rep = decode_stream(b"".join(parts), tables, FP)
    assert sorted(rep.lost_indices) == list(np.flatnonzero(drop))
    assert_decoded(c[rep.valid], ref_code[rep.valid])
    after_key = np.arange(n) % keyint == 0
    assert np.all(rep.valid[after_key & ~drop])


def test_packet_framing_sizes():
    """Framing bytes per packet: delta 3 (1 + CRC-16), delta group 4, key 11 (index, step, CRC32)."""
    from nerfvc.codec.framing import TYPE_DELTA, TYPE_KEY, build_packet, parse_packet

    fp = bytes.fromhex(FP)
    for n in (0, 5, 14):
        assert len(build_packet(fp, TYPE_DELTA, 77, b"x" * n)) == n + 3
    assert len(build_packet(fp, TYPE_DELTA, 77, b"x" * 20, count=4)) == 24
    assert len(build_packet(fp, TYPE_KEY, 77, b"x" * 20, step_index=-3, count=4)) == 31
    for kind, count in ((TYPE_DELTA, 1), (TYPE_DELTA, 8), (TYPE_KEY, 8)):
        pkt = build_packet(fp, kind, 1000, b"abc", step_index=-3, count=count)
        p = parse_packet(fp, pkt, next_index=1000 - 5)
        assert (p.index, p.kind, p.count, p.payload) == (1000, kind, count, b"abc")
        with pytest.raises(BitstreamError):  # another model's fingerprint
            parse_packet(bytes(8), pkt, next_index=1000)


def test_long_stream_every_byte_flip(feats, tables):
    """Byte flips across a longer stream (short CRC-16 delta checks, resynchronization): never wrong."""
    code, pose = feats[0][:24], feats[1][:24]
    for group in (1, 4):
        data = encode_stream(tables, FP, code, pose, keyframe_interval=8, frames_per_packet=group)
        ref = reference_stream(tables, code, pose, 0, keyframe_interval=8)
        for i in range(HEADER_SIZE, len(data)):
            bad = bytearray(data)
            bad[i] ^= 0x5A
            rep = _check_decode(bytes(bad), tables, ref)
            assert rep is not None and (rep.concealed > 0 or rep.corrupt_packets > 0)


def test_header_roundtrip():
    h = StreamHeader(FP, 29.97, 79, -3, 50, 1234)
    assert StreamHeader.from_bytes(h.to_bytes()) == h


def test_loss_with_multi_frame_packets(feats, tables):
    code, pose = feats
    enc = StreamEncoder(tables, FP, keyframe_interval=12, frames_per_packet=2)
    dec = StreamDecoder(tables, FP)
    dec.read_header(enc.header())
    ref_code, _ = reference_stream(tables, code, pose, 0, keyframe_interval=12)
    pkts = [p for p in (enc.encode(c, q) for c, q in zip(code, pose)) if p]
    lost = {3, 4, 20}
    for i, p in enumerate(pkts):
        if i in lost:
            continue
        for f in dec.decode_frames(p):
            if f.concealed:
                assert any(2 * j <= f.index for j in lost)
            else:
                assert_decoded(f.code, ref_code[f.index])
    assert dec.stats.lost == 2 * len(lost)
    assert not f.concealed  # recovered by the end
