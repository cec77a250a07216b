"""Bitstream mutation campaign → benchmarks/results/fuzz.json.

Mutates coded streams (bit flips, byte runs, insertions, deletions, truncation, splices, forged header
fields with a valid header CRC, forged packets with a valid check at any index, random delta payloads) and
decodes each with ``decode_stream``. Every outcome is one of: a clean error (``NerfvcError``), a decode
with damage reported (concealed frames or corrupt packets), a clean decode, or a *foreign* exception
(anything else: a bug). Also counted: decodes over ``--slow`` seconds, decodes returning more frames than
the stream's size can hold, and damage (not forgery) that yields frames flagged valid but wrong.

Then measures the CRC-16 escape rate of delta packets: one delta packet's payload is replaced by random
bytes of the same length ``--crc-tries`` times, counting how often ``parse_packet`` accepts it (at the
expected index: silently wrong frames; at another candidate index: a gap, so concealed), and the bits per
frame a CRC-32 on delta packets would cost instead.

Tables come from the german dataset's features when present (else synthetic AR(1) features).

    PYTHONPATH=. .venv/bin/python benchmarks/fuzz.py [--seconds 120] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import random
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nerfvc.codec import decode_stream, encode_stream, fit_codec  # noqa: E402
from nerfvc.codec.framing import (  # noqa: E402
    _HEADER,
    HEADER_SIZE,
    TRUNCATED_SLACK,
    TYPE_DELTA,
    TYPE_KEY,
    TYPE_PAPER,
    build_packet,
    fp_bytes,
    frame_capacity,
    parse_packet,
)
from nerfvc.codec.synthetic import synthetic_features  # noqa: E402
from nerfvc.datasetdir import features_path, read_features  # noqa: E402
from nerfvc.errors import NerfvcError  # noqa: E402
from nerfvc.face.model import load_face_model  # noqa: E402
from nerfvc.fsutil import write_json_atomic  # noqa: E402
from nerfvc.record import machine_record  # noqa: E402

FP = "0123456789abcdef"
FRAMES = 60
DAMAGE = ("flip", "bytes", "insert", "delete", "truncate", "splice", "delta_payload")
FORGERY = ("header", "forge_packet")
_FIELDS = ["magic", "ver", "mode", "fp", "fps_milli", "dim", "pose_dim", "step", "keyint", "nframes"]
_FIELD_BITS = {"fps_milli": 32, "dim": 16, "pose_dim": 8, "step": 8, "keyint": 16, "nframes": 32, "mode": 8}


def features(dataset: Path) -> tuple[np.ndarray, np.ndarray, tuple | None, str]:
    """(code, pose, face model, source) to fit and code: the dataset's, else synthetic features."""
    f = features_path(dataset)
    if f.exists():
        z = read_features(dataset)
        code, pose = z["expression"].astype(np.float32), z["pose"].astype(np.float32)
        return code, pose, load_face_model(dataset), str(f)
    code, pose = synthetic_features(600, 20, seed=0)
    return code, pose, None, "synthetic AR(1), 20-d code"


def packets(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, size, kind, payload offset) of every packet of an undamaged stream."""
    fp, out, pos, nxt = fp_bytes(FP), [], HEADER_SIZE, 0
    while pos < len(data):
        p = parse_packet(fp, data, pos, next_index=nxt)
        check = 2 if p.kind == TYPE_DELTA else 4
        out.append((pos, p.size, p.kind, pos + p.size - check - len(p.payload)))
        pos, nxt = pos + p.size, p.index + p.count
    return out


def forge_header(data: bytes, rng: random.Random) -> bytes:
    values = dict(zip(_FIELDS, _HEADER.unpack(data[: _HEADER.size])))
    for name in rng.sample(sorted(_FIELD_BITS), rng.randint(1, 3)):
        bits = _FIELD_BITS[name]
        v = rng.choice([0, 1, (1 << bits) - 1, rng.getrandbits(bits), rng.randint(0, 300)]) & (
            (1 << bits) - 1
        )
        if name == "step":
            v = v - 256 if v & 0x80 else v
        values[name] = v
    body = _HEADER.pack(*(values[n] for n in _FIELDS))
    return body + struct.pack(">I", zlib.crc32(body)) + data[HEADER_SIZE:]


def mutate(data: bytes, kind: str, rng: random.Random, pkts: list) -> bytes:
    """One mutation of ``data``."""
    b = bytearray(data)
    n = len(b)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(HEADER_SIZE, n)
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        i = rng.randrange(HEADER_SIZE, n)
        b[i : i + rng.randint(1, 16)] = rng.randbytes(rng.randint(1, 16))
    elif kind == "insert":
        i = rng.randrange(HEADER_SIZE, n + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 32))
    elif kind == "delete":
        i = rng.randrange(HEADER_SIZE, n)
        del b[i : i + rng.randint(1, 32)]
    elif kind == "truncate":
        del b[rng.randrange(0, n) :]
    elif kind == "splice":
        i, j = rng.randrange(HEADER_SIZE, n), rng.randrange(HEADER_SIZE, n)
        b[i:i] = data[j : j + rng.randint(1, 64)]
    elif kind == "delta_payload":
        o, s, _, p = rng.choice([t for t in pkts if t[2] == TYPE_DELTA and t[0] + t[1] - 2 > t[3]])
        b[p : o + s - 2] = rng.randbytes(o + s - 2 - p)
    elif kind == "header":
        return forge_header(data, rng)
    elif kind == "forge_packet":
        k = rng.choice([TYPE_DELTA, TYPE_KEY, TYPE_PAPER])
        count = 1 if k == TYPE_PAPER else rng.randint(1, 8)
        index = rng.choice([rng.randrange(0, 2 * FRAMES), rng.getrandbits(32), 10**7, 2**32 - 1])
        payload = rng.randbytes(rng.randint(0, 24))
        pkt = build_packet(fp_bytes(FP), k, index, payload, rng.randint(-128, 127), count)
        i = rng.choice([t[0] for t in pkts] + [n])
        b[i:i] = pkt
        if rng.random() < 0.3:
            return forge_header(bytes(b), rng)
    return bytes(b)


def campaign(streams: dict, tables, seconds: float, slow: float, rng: random.Random) -> dict:
    """Mutate and decode until ``seconds`` have passed → counts per outcome and per mutation kind."""
    keys = ("tried", "clean_errors", "concealed", "clean_decodes", "foreign_exceptions")
    counts = dict.fromkeys((*keys, "over_time", "over_frame_capacity", "silently_wrong"), 0)
    by_kind = {k: dict.fromkeys(keys, 0) for k in DAMAGE + FORGERY}
    foreign: list[str] = []
    slowest = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        name = rng.choice(sorted(streams))
        data, pkts, ref = streams[name]
        kind = rng.choice(DAMAGE + FORGERY)
        bad = mutate(data, kind, rng, pkts)
        t0 = time.perf_counter()
        try:
            code, pose, rep = decode_stream(bad, tables, FP)
            outcome = "concealed" if rep.concealed or rep.corrupt_packets else "clean_decodes"
            if len(code) > frame_capacity(len(bad)) + TRUNCATED_SLACK:
                counts["over_frame_capacity"] += 1
            if kind in DAMAGE:
                v = rep.valid[: len(ref[0])]
                m = len(v)
                if not (
                    np.array_equal(code[:m][v], ref[0][:m][v]) and np.array_equal(pose[:m][v], ref[1][:m][v])
                ):
                    counts["silently_wrong"] += 1
        except NerfvcError:
            outcome = "clean_errors"
        except Exception as e:  # the campaign counts every foreign exception
            outcome = "foreign_exceptions"
            if len(foreign) < 20:
                foreign.append(f"{kind}: {type(e).__name__}: {e}"[:300])
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        counts["over_time"] += dt > slow
        for c in (counts, by_kind[kind]):
            c["tried"] += 1
            c[outcome] += 1
    return {"counts": counts, "by_mutation": by_kind, "foreign_samples": foreign, "slowest_decode_s": slowest}


def crc_escape(data: bytes, pkts: list, tries: int, rng: random.Random) -> dict:
    """How often a random delta payload passes the packet check, and what CRC-32 would cost."""
    fp = fp_bytes(FP)
    deltas = [t for t in pkts if t[2] == TYPE_DELTA and t[0] + t[1] - 2 > t[3]]
    o, s, _, p = deltas[len(deltas) // 2]
    expected = parse_packet(fp, data, o, next_index=0).index  # index of the packet in its stream
    pkt = bytearray(data[o : o + s])
    n = o + s - 2 - p  # payload bytes
    accepted = at_expected = 0
    for _ in range(tries):
        pkt[p - o : s - 2] = rng.randbytes(n)
        try:
            got = parse_packet(fp, bytes(pkt), 0, next_index=expected)
        except NerfvcError:
            continue
        accepted += 1
        at_expected += got.index == expected
    return {
        "tries": tries,
        "packet_bytes": s,
        "payload_bytes": n,
        "accepted_any_index": accepted,
        "accepted_at_expected_index": at_expected,
        "rate_at_expected_index": at_expected / tries,
        "crc16_odds": 2.0**-16,
    }


def crc32_cost(streams: dict) -> dict:
    """Bits per frame of each stream, and the 16 bits per delta packet a CRC-32 would add."""
    out = {}
    for name, (data, pkts, ref) in streams.items():
        n = len(ref[0])
        deltas = sum(t[2] == TYPE_DELTA for t in pkts)
        bits = 8 * (len(data) - HEADER_SIZE) / n
        out[name] = {
            "bits_per_frame": round(bits, 2),
            "delta_packets_per_frame": round(deltas / n, 3),
            "crc32_extra_bits_per_frame": round(16 * deltas / n, 2),
            "crc32_extra_percent": round(100 * 16 * deltas / n / bits, 1),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the mutation campaign")
    ap.add_argument("--slow", type=float, default=1.0, help="a decode longer than this counts as over time")
    ap.add_argument("--crc-tries", type=int, default=1 << 20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", type=Path, default=Path("/work/data/datasets/german"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    code, pose, face, source = features(args.dataset)
    n_fit = int(0.8 * len(code))
    tables = fit_codec(code[:n_fit], pose[:n_fit], face_model=face)
    test_code, test_pose = code[n_fit : n_fit + FRAMES], pose[n_fit : n_fit + FRAMES]
    ref = tables.reference(test_code, test_pose, 0)
    streams = {}
    for group in (1, 4):
        data = encode_stream(
            tables,
            FP,
            test_code,
            test_pose,
            fps=25,
            step_index=0,
            keyframe_interval=25,
            frames_per_packet=group,
        )
        streams[f"{group}fpp"] = (data, packets(data), ref)
    t0 = time.perf_counter()
    result = campaign(streams, tables, args.seconds, args.slow, rng)
    t_campaign = time.perf_counter() - t0
    escape = crc_escape(*streams["1fpp"][:2], args.crc_tries, rng)
    out = {
        "benchmark": "bitstream mutation campaign (benchmarks/fuzz.py)",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine_record() | {"python": platform.python_version()},
        "features": source,
        "streams": {
            k: {"frames": FRAMES, "bytes": len(v[0]), "packets": len(v[1])} for k, v in streams.items()
        },
        "seed": args.seed,
        "campaign_seconds": round(t_campaign, 1),
        "over_time_threshold_s": args.slow,
        **result,
        "crc16_escape": escape,
        "crc32_on_delta_packets": crc32_cost(streams),
    }
    write_json_atomic(args.out, out)
    c = out["counts"]
    print(
        f"{c['tried']} mutations: {c['clean_errors']} clean errors, {c['concealed']} concealed, "
        f"{c['clean_decodes']} clean decodes, {c['foreign_exceptions']} foreign exceptions, "
        f"{c['over_time']} over time, {c['silently_wrong']} silently wrong; "
        f"CRC-16 escapes at the expected index {escape['accepted_at_expected_index']}/{escape['tries']}"
    )
    sys.exit(1 if c["foreign_exceptions"] or c["over_frame_capacity"] else 0)


if __name__ == "__main__":
    main()
