"""Bitrate benchmark of the feature codec → benchmarks/results/bitrate.json.

For every complete dataset in /work/data/datasets (features.npz + face model), fit codec tables on the
train split (first 80%), code the test split (last 20%) at several steps and report: bits/frame (packets
incl. framing, keyframes every 2 s included, and payload only), kbps, feature error (expression L2,
rotation degrees, translation mm and px, landmark px from the face model) next to the tracker's own
frame-to-frame jitter, the fp16+zstd "paper" mode, rate-control picks and encode/decode µs per frame.
Falls back to synthetic AR(1) features when no dataset exists.

    PYTHONPATH=. .venv/bin/python benchmarks/bitrate.py [--datasets DIR] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerfvc.codec import StreamDecoder, StreamEncoder, decode_stream, encode_stream, fit_codec
from nerfvc.codec.encoder import choose_step_index
from nerfvc.codec.framing import HEADER_SIZE
from nerfvc.codec.synthetic import synthetic_features
from nerfvc.codec.tables import step_from_index
from nerfvc.datasetdir import dataset_split, read_features, read_manifest
from nerfvc.errors import InputError
from nerfvc.face.model import load_face_model
from nerfvc.features import rotation_angle_deg
from nerfvc.record import machine_record

FP = "0123456789abcdef"
STEP_INDICES = [-24, -20, -16, -12, -10, -8, -6, -4, -2, 0, 2, 4, 6, 8, 10, 12, 16, 32, 48]
RDOQ = [0.0, 0.3]
GROUPS = [1, 2, 4]  # frames per packet: a live sender adds G-1 frames of latency (files: none)


def robust_jitter(x: np.ndarray) -> np.ndarray:
    """Per-column frame-to-frame noise (MAD of second differences / sqrt(6)) of ``x (N, ...)``."""
    d2 = x[2:] - 2 * x[1:-1] + x[:-2]
    return np.median(np.abs(d2 - np.median(d2, axis=0)), axis=0) * 1.4826 / np.sqrt(6)


def rotvec(pose: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(pose[:, :9].reshape(-1, 3, 3).astype(np.float64)).as_rotvec()


def landmarks_px(expr: np.ndarray, pose: np.ndarray, face: tuple, cam: dict) -> np.ndarray:
    """Reconstruct landmarks (N, L, 2) in pixels with the face model (mean + basis @ e, then [R|t], K)."""
    mean, basis = face
    shape = mean[None] + (expr.astype(np.float64) @ basis.T).reshape(len(expr), -1, 3)
    r = pose[:, :9].reshape(-1, 3, 3).astype(np.float64)
    x = np.einsum("nij,nlj->nli", r, shape) + pose[:, None, 9:12]
    return np.stack(
        [cam["fx"] * x[..., 0] / x[..., 2] + cam["cx"], cam["fy"] * x[..., 1] / x[..., 2] + cam["cy"]], -1
    )


def project_origin(pose: np.ndarray, cam: dict) -> np.ndarray:
    t = pose[:, 9:12].astype(np.float64)
    return np.stack(
        [cam["fx"] * t[:, 0] / t[:, 2] + cam["cx"], cam["fy"] * t[:, 1] / t[:, 2] + cam["cy"]], -1
    )


def errors(expr, pose, dexpr, dpose, face, cam) -> dict:
    """Codec error of decoded vs original features."""
    out = {
        "expr_l2_rms": float(np.sqrt(((dexpr - expr) ** 2).sum(1).mean())),
        "rot_deg_rms": float(np.sqrt((rotation_angle_deg(pose, dpose) ** 2).mean())),
        "trans_mm_rms": float(1000 * np.sqrt(((dpose[:, 9:] - pose[:, 9:]) ** 2).sum(1).mean())),
    }
    if cam is not None:
        out["origin_px_rms"] = float(
            np.sqrt(((project_origin(dpose, cam) - project_origin(pose, cam)) ** 2).sum(1).mean())
        )
    if face is not None and cam is not None:
        d = np.linalg.norm(
            landmarks_px(dexpr, dpose, face, cam) - landmarks_px(expr, pose, face, cam), axis=-1
        )
        out["landmark_px_mean"] = float(d.mean())
        out["landmark_px_rms"] = float(np.sqrt((d**2).mean()))
        out["landmark_px_max"] = float(d.max())
    return out


def jitters(expr, pose, landmarks, face, cam) -> dict:
    """The tracker's own frame-to-frame jitter, in the same units as :func:`errors`."""
    out = {
        "expr_l2": float(np.sqrt((robust_jitter(expr.astype(np.float64)) ** 2).sum())),
        "rot_deg": float(np.degrees(np.sqrt((robust_jitter(rotvec(pose)) ** 2).sum()))),
        "trans_mm": float(1000 * np.sqrt((robust_jitter(pose[:, 9:].astype(np.float64)) ** 2).sum())),
    }
    if cam is not None:
        out["origin_px"] = float(np.sqrt((robust_jitter(project_origin(pose, cam)) ** 2).sum()))
    if face is not None and cam is not None:
        j = robust_jitter(landmarks_px(expr, pose, face, cam))  # (L, 2)
        out["landmark_px_model"] = float(np.sqrt((j**2).sum(-1).mean()))
    if landmarks is not None:
        j = robust_jitter(landmarks[..., :2].astype(np.float64))
        out["landmark_px_tracker"] = float(np.sqrt((j**2).sum(-1).mean()))
    return out


def timed_roundtrip(tables, expr, pose, fps, keyint, step_index, mode="nerfvc", rdoq=0.0, group=1):
    """Per-packet encode/decode with timing → (decoded expr, pose, packet bits, enc µs, dec µs per frame).

    ``bits`` has one entry per packet (``group`` frames each)."""
    enc = StreamEncoder(
        tables, FP, fps, keyframe_interval=keyint, step_index=step_index, mode=mode, rdoq=rdoq,
        frames_per_packet=group,
    )  # fmt: skip
    dec = StreamDecoder(tables, FP)
    dec.read_header(enc.header())
    t0 = time.perf_counter()
    pkts = [enc.encode(c, p) for c, p in zip(expr, pose)] + [enc.flush()]
    t1 = time.perf_counter()
    pkts = [p for p in pkts if p]
    frames = [f for p in pkts for f in dec.decode_frames(p)]
    t2 = time.perf_counter()
    n = len(expr)
    assert len(frames) == n and not any(f.concealed for f in frames)
    de = np.stack([f.code for f in frames])
    dp = np.stack([f.pose for f in frames])
    bits = np.array([8 * len(p) for p in pkts])
    return de, dp, bits, (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def payload_bits(pkts_bits: np.ndarray, keyint: int, group: int = 1) -> np.ndarray:
    """Payload bits per packet: packet bits minus framing (short lengths assumed)."""
    is_key = (np.arange(len(pkts_bits)) * group) % keyint < group
    return pkts_bits - 8 * np.where(is_key, 11, 3 if group == 1 else 4)


def bench_dataset(name, expr, pose, landmarks, valid, face, cam, fps, split, quick=False, **fit_kw) -> dict:
    ntr = split
    keyint = round(2 * fps)
    t0 = time.perf_counter()
    tables = fit_codec(expr[:ntr], pose[:ntr], valid[:ntr], face_model=face, **fit_kw)
    fit_s = time.perf_counter() - t0
    te, tp = expr[ntr:], pose[ntr:]
    lm = landmarks[ntr:] if landmarks is not None else None
    res = {
        "dataset": name,
        "fps": fps,
        "frames_train": int(ntr),
        "frames_test": len(te),
        "code_dim": int(expr.shape[1]),
        "keyframe_interval": keyint,
        "predictor": tables.predictor,
        "steps_from": tables.info.get("steps"),
        "fit_s": round(fit_s, 3),
        "tracker_jitter_test": jitters(te, tp, lm, face, cam),
        "steps": [],
    }
    grid = [(g, r, k) for g in GROUPS for r in RDOQ for k in (STEP_INDICES[::2] if quick else STEP_INDICES)]
    for group, rdoq, k in grid:
        de, dp, bits, enc_us, dec_us = timed_roundtrip(tables, te, tp, fps, keyint, k, rdoq=rdoq, group=group)
        pb = payload_bits(bits, keyint, group)
        n = len(te)
        res["steps"].append(
            {
                "frames_per_packet": group,
                "rdoq": rdoq,
                "step_index": k,
                "step": step_from_index(k),
                "bits_per_frame": float(bits.sum() / n),
                "payload_bits_per_frame": float(pb.sum() / n),
                "kbps": float(bits.sum() / n * fps / 1000),
                "payload_kbps": float(pb.sum() / n * fps / 1000),
                "encode_us_per_frame": round(enc_us, 1),
                "decode_us_per_frame": round(dec_us, 1),
                "error": errors(te, tp, de, dp, face, cam),
            }
        )
    de, dp, bits, enc_us, dec_us = timed_roundtrip(tables, te, tp, fps, keyint, 0, mode="paper")
    res["paper_fp16_zstd"] = {
        "bits_per_frame": float(bits.mean()),
        "kbps": float(bits.mean() * fps / 1000),
        "encode_us_per_frame": round(enc_us, 1),
        "decode_us_per_frame": round(dec_us, 1),
        "error": errors(te, tp, de, dp, face, cam),
    }
    jit = res["tracker_jitter_test"].get("landmark_px_model")
    if jit is not None:  # cheapest setting whose RMS landmark error is below the tracker's (RMS) jitter
        for g in GROUPS:
            ok = [
                s for s in res["steps"] if s["error"]["landmark_px_rms"] < jit and s["frames_per_packet"] == g
            ]
            best = min(ok, key=lambda s: s["bits_per_frame"]) if ok else None
            res[f"best_below_jitter_{g}fpp"] = best
    res["rate_control"] = []
    for kbps in (3.0, 2.0):
        k = choose_step_index(tables, FP, te, tp, kbps, fps, keyint, rdoq=0.3)
        data = encode_stream(tables, FP, te, tp, fps, keyframe_interval=keyint, step_index=k, rdoq=0.3)
        de, dp, _ = decode_stream(data, tables, FP)
        b = (len(data) - HEADER_SIZE) * 8 / len(te)
        res["rate_control"].append(
            {
                "target_kbps": kbps,
                "rdoq": 0.3,
                "step_index": k,
                "bits_per_frame": b,
                "kbps": b * fps / 1000,
                "error": errors(te, tp, de, dp, face, cam),
            }
        )
    return res


def load_datasets(root: Path) -> list[tuple]:
    out = []
    for d in sorted(root.glob("*")):
        try:  # complete datasets with features only
            m = read_manifest(d)
            f = read_features(d)
        except InputError:
            continue
        split = dataset_split({"num_frames": len(f["pose"]), **m})[0][1]
        out.append((d.name, f, load_face_model(d), m.get("camera"), float(m.get("fps", 25.0)), split))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="/work/data/datasets")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bitrate.json"))
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--only", help="comma-separated dataset names")
    args = ap.parse_args()
    results = []
    data = load_datasets(Path(args.datasets))
    if args.only:
        data = [d for d in data if d[0] in args.only.split(",")]
    if not data:
        print("no complete dataset found: using synthetic AR(1) features", file=sys.stderr)
        code, pose = synthetic_features(1000, 79)
        data = [("synthetic", {"expression": code, "pose": pose}, None, None, 25.0, 800)]
    for name, f, face, cam, fps, split in data:
        valid = f.get("valid", np.ones(len(f["pose"]), bool))
        r = bench_dataset(
            name, f["expression"], f["pose"], f.get("landmarks"), valid, face, cam, fps, split, args.quick
        )
        results.append(r)
        j = r["tracker_jitter_test"]
        print(
            f"== {name}: {r['frames_test']} test frames @ {fps:g} fps, predictor {r['predictor']}, jitter {j}"
        )
        for s in r["steps"]:
            e = s["error"]
            print(
                f"  G{s['frames_per_packet']} rdoq {s['rdoq']} x{s['step']:.3f}: "
                f"{s['bits_per_frame']:6.1f} bits/frame "
                f"({s['payload_bits_per_frame']:5.1f} payload) {s['kbps']:.3f} kbps | "
                f"expr {e['expr_l2_rms']:.5f} rot {e['rot_deg_rms']:.3f} deg "
                f"lmk {e.get('landmark_px_rms', float('nan')):.3f} px rms | "
                f"enc {s['encode_us_per_frame']:.0f} us dec {s['decode_us_per_frame']:.0f} us"
            )
        p = r["paper_fp16_zstd"]
        lmk = p["error"].get("landmark_px_mean")
        print(f"  paper: {p['bits_per_frame']:.1f} bits/frame {p['kbps']:.2f} kbps lmk {lmk}")
    out = {
        "benchmark": "nerfvc codec bitrate",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/bitrate.py" + (" --quick" if args.quick else ""),
        "machine": machine_record(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
