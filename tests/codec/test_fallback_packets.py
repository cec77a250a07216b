"""Fallback packets (issue 17, docs/guard.md) in the .nvc stream: they round-trip, feature decoding ignores
them, and damaged streams holding them are still caught or concealed, never silently wrong."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.codec import StreamDecoder, StreamEncoder, decode_stream, encode_stream
from nerfvc.codec.coder import reference_stream
from nerfvc.codec.decoder import FallbackPacket
from nerfvc.codec.encoder import insert_fallback
from nerfvc.codec.framing import HEADER_SIZE, TYPE_FALLBACK, parse_packet
from nerfvc.errors import BitstreamError

from .conftest import FP, assert_decoded
from .test_damage import _check_decode as check_damaged_decode

PICTURE = bytes([2]) + bytes(range(200))  # payload stand-in (the codec never looks inside)


def _stream(tables, code, pose, fallback_at=(2, 5), group=1):
    """Header, then per frame: the fallback packets for it, then its feature packet(s)."""
    enc = StreamEncoder(tables, FP, keyframe_interval=4, num_frames=len(code), frames_per_packet=group)
    parts, sent = [enc.header()], []
    for i, (c, p) in enumerate(zip(code, pose)):
        if i in fallback_at:
            pic = PICTURE if i == fallback_at[0] else b""
            alpha = 255 if i == fallback_at[0] else 0
            parts.append(enc.fallback(i, alpha, pic))
            sent.append((i, alpha, pic))
        parts.append(enc.encode(c, p))
    parts.append(enc.flush())
    return b"".join(parts), sent


@pytest.fixture(scope="module", params=[1, 4], ids=["1fpp", "4fpp"])
def with_fallback(request, feats, tables):
    code, pose = feats[0][:12], feats[1][:12]
    data, sent = _stream(tables, code, pose, group=request.param)
    plain, _ = _stream(tables, code, pose, fallback_at=(), group=request.param)
    return data, plain, sent, reference_stream(tables, code, pose, 0, keyframe_interval=4)


def test_fallback_packets_round_trip(with_fallback, tables):
    data, plain, sent, ref = with_fallback
    code, pose, rep = decode_stream(data, tables, FP)
    code0, pose0, rep0 = decode_stream(plain, tables, FP)
    np.testing.assert_array_equal(code, code0)  # the features decode exactly as without them
    np.testing.assert_array_equal(pose, pose0)
    assert_decoded(code, ref[0])
    assert rep.valid.all() and rep.corrupt_packets == 0 and rep.concealed == 0
    assert [(f.index, f.alpha, f.picture) for f in rep.fallback] == sent
    assert rep.fallback_bytes == len(data) - len(plain)
    assert not rep0.fallback and "fallback" in rep.summary()


def test_fallback_packets_through_the_live_decoder(with_fallback, tables):
    data, _, sent, ref = with_fallback
    dec = StreamDecoder(tables, FP)
    dec.read_header(data)
    frames = dec.decode_message(data[HEADER_SIZE:])  # one message holding every packet
    assert [f.index for f in frames] == list(range(len(ref[0])))
    assert_decoded(np.stack([f.code for f in frames]), ref[0])
    assert [(f.index, f.alpha, f.picture) for f in dec.fallback] == sent
    assert dec.stats.corrupt == 0


def test_fallback_packet_layout(tables):
    enc = StreamEncoder(tables, FP)
    pkt = enc.fallback(7, 128, PICTURE)
    assert pkt[0] == 0xC8 and len(pkt) == 1 + 4 + 1 + 2 + len(PICTURE) + 4
    p = parse_packet(bytes.fromhex(FP), pkt)
    assert (p.kind, p.index, p.step_index, p.payload, p.size) == (TYPE_FALLBACK, 7, 128, PICTURE, len(pkt))
    assert len(enc.fallback(7, 0)) == 11  # weight change only: 88 bits
    with pytest.raises(BitstreamError):
        parse_packet(bytes.fromhex("fedcba9876543210"), pkt)  # another model's packet fails its CRC
    with pytest.raises(ValueError):
        enc.fallback(0, 256)


def _check_decode(data, tables, ref):
    """The damage tests' check (a clear error, or exact / concealed frames), and a fallback packet that
    passes is one that was sent."""
    rep = check_damaged_decode(data, tables, ref)
    for f in [] if rep is None else rep.fallback:
        assert f.picture in (PICTURE, b"") and 0 <= f.alpha <= 255
    return rep


def test_damaged_streams_with_fallback_packets(with_fallback, tables):
    data, _, _, ref = with_fallback
    for i in range(HEADER_SIZE, len(data), 3):
        for mask in (0xFF, 0x01):
            bad = bytearray(data)
            bad[i] ^= mask
            rep = _check_decode(bytes(bad), tables, ref)
            assert rep is not None and (rep.concealed or rep.corrupt_packets or rep.corrupt_bytes)
    for n in range(0, len(data), 5):
        rep = _check_decode(data[:n], tables, ref)
        assert (rep is None) == (n < HEADER_SIZE)


@pytest.mark.parametrize("frame_step", [1, 3])
def test_insert_fallback_places_packets_before_their_frames(feats, tables, frame_step):
    """A whole stream gets the guard's packets (camera-frame indices) in front of the feature packet that
    carries their frame; features decode as before and every packet is kept, also past the last coded frame
    when the frame step is > 1."""
    code, pose = feats[0][:13], feats[1][:13]
    plain = encode_stream(tables, FP, code, pose, frames_per_packet=2, frame_step=frame_step)
    last = 12  # the last camera frame: past the last coded frame index (4) when the frame step is 3
    sent = [FallbackPacket(7, 255, PICTURE), FallbackPacket(0, 0, b""), FallbackPacket(last, 128, b"")]
    data = insert_fallback(plain, FP, sent)
    code0, pose0, _ = decode_stream(plain, tables, FP)
    code1, pose1, rep = decode_stream(data, tables, FP)
    np.testing.assert_array_equal(code1, code0)
    np.testing.assert_array_equal(pose1, pose0)
    assert [(f.index, f.alpha, f.picture) for f in rep.fallback] == [
        (0, 0, b""),
        (7, 255, PICTURE),
        (last, 128, b""),
    ]
    assert rep.fallback_bytes == len(data) - len(plain) and rep.corrupt_packets == 0
    # the packet order: (True, last coded frame) for feature packets, (False, camera frame) for fallback ones
    order, pos, next_index = [], HEADER_SIZE, 0
    while pos < len(data):
        p = parse_packet(bytes.fromhex(FP), data, pos, next_index=next_index)
        if p.kind == TYPE_FALLBACK:
            order.append((False, p.index))
        else:
            order.append((True, p.index + p.count - 1))
            next_index = p.index + p.count
        pos += p.size
    for k, (is_features, idx) in enumerate(order):
        if not is_features:  # after every feature packet of earlier coded frames, before the one of its own
            coded = idx // frame_step
            assert all(j < coded for f, j in order[:k] if f)
            assert all(j >= coded for f, j in order[k + 1 :] if f)
