"""Calibration of the sender-side quality guard and its fallback (issue 17) on the shared clips.

    PYTHONPATH=. .venv/bin/python benchmarks/guard.py --clips work/bench-batch/sequential \
        [--model-name model_1min] [--cache /tmp/guard-cache] [-o benchmarks/results/guard.json]

For every ``CLIPS/<clip>/{dataset,MODEL}``, on the held-out frames (the dataset's test split, features as
tracked in the dataset): the true error of the render (PSNR, LPIPS at 256², against the frame) and of the
frozen first test frame (x265 intra CRF 23, as ``nerfvc eval``'s freeze), and the guard's estimates —
the feature statistics (``nerfvc.guard.stats``, fitted on the training split) and the sender's tiny render
(64² and 32²) compared with the camera frame. Reports Pearson / Spearman per clip and pooled, the thresholds
and their precision / recall for "render worse than the frozen frame" (PSNR), the fallback picture codecs
(bits vs quality), and the guard + fallback simulated frame by frame (``SenderGuard`` → packets →
``Compositor``): share of frames in fallback, bits, quality with and without the guard.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from nerfvc.codec.framing import HEADER_SIZE
from nerfvc.datasetdir import dataset_split, frame_path, read_features, read_manifest
from nerfvc.eval import baselines as B
from nerfvc.eval.lpips import lpips_batch
from nerfvc.eval.video import resize_frames
from nerfvc.features import model_inputs
from nerfvc.fsutil import write_bytes_atomic, write_json_atomic
from nerfvc.guard.fallback import Compositor, GuardConfig, SenderGuard
from nerfvc.guard.modelfiles import fit_from_dataset
from nerfvc.guard.picture import decode_picture, encode_picture, upsample
from nerfvc.metrics import psnr
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline
from nerfvc.record import machine_record

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
CHECKS = (64, 32)
PICTURES = [("hevc", s, q) for s in (64, 96, 128, 160) for q in (38, 42, 46)] + [
    ("webp", s, q) for s in (64, 96, 128) for q in (10, 40)
]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(psnr(a, b), 60.0)


def _corr(x, y) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": None, "spearman": None, "n": len(x)}
    return {
        "pearson": round(float(pearsonr(x, y)[0]), 3),
        "spearman": round(float(spearmanr(x, y)[0]), 3),
        "n": len(x),
    }


def _pr(fire: np.ndarray, worse: np.ndarray) -> dict:
    tp = int(np.sum(fire & worse))
    return {
        "precision": round(tp / max(int(fire.sum()), 1), 3) if fire.any() else None,
        "recall": round(tp / max(int(worse.sum()), 1), 3) if worse.any() else None,
        "fired": round(float(fire.mean()), 3),
    }


def _best_threshold(score: np.ndarray, worse: np.ndarray, higher_fires: bool) -> float:
    """The threshold with the best F1 for ``worse`` (ties: the first)."""
    best, best_f1 = float(np.median(score)), -1.0
    for t in np.unique(np.round(score, 3)):
        fire = score > t if higher_fires else score < t
        tp = np.sum(fire & worse)
        f1 = 2 * tp / max(fire.sum() + worse.sum(), 1)
        if f1 > best_f1:
            best, best_f1 = float(t), float(f1)
    return best


def load_clip(clip: Path, model_name: str, cache: Path | None) -> dict:
    """Test frames (256² GT), renders at 256² and check sizes, features, guard components."""
    ds, md = clip / "dataset", clip / model_name
    manifest = read_manifest(ds)
    feats = read_features(ds, manifest)
    _, (a, b) = dataset_split(manifest)
    idx = np.arange(a, b)
    x, pose = model_inputs(feats, md), feats["pose"]
    t = time.perf_counter()
    stats = fit_from_dataset(md, ds)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    comp = stats.components(x[idx], pose[idx])
    stats_ms = (time.perf_counter() - t) / len(idx) * 1000
    cached = cache / f"{clip.name}.npz" if cache else None
    if cached and cached.is_file():
        z = dict(np.load(cached))
        ms = {s: float(z[f"ms{s}"]) for s in (SIZE, *CHECKS)}
    else:
        gt = np.stack([np.asarray(Image.open(frame_path(ds, i)).convert("RGB")) for i in idx])
        z = {"gt256": resize_frames(gt, SIZE), **{f"gt{s}": resize_frames(gt, s) for s in CHECKS}}
        r = ReceiverPipeline.from_model_dir(md)
        ms = {}
        for s in (SIZE, *CHECKS):
            t = time.perf_counter()
            z[f"r{s}"] = np.stack([r.render(x[i], pose[i], s, s) for i in idx])
            ms[s] = (time.perf_counter() - t) / len(idx) * 1000
    return {
        "idx": idx,
        "x": x[idx],
        "pose": pose[idx],
        "fps": float(manifest.get("fps") or 25.0),
        "z": z,
        "render_ms": ms,
        "components": comp,
        "score": stats.score(x[idx], pose[idx]),
        "stats_ms": stats_ms,
        "fit_s": fit_s,
        "model": md,
    }


def feature_kbps(md: Path, x: np.ndarray, pose: np.ndarray, fps: float) -> float:
    """nerfvc's own rate on these frames: Q = 1, one frame per packet (live), header included."""
    data = SenderPipeline.from_model_dir(md).encode_stream(x, pose, fps, step_index=0)
    return len(data) * 8 / (len(x) / fps) / 1000


def simulate(d: dict, cfg: GuardConfig) -> dict:
    """The guard frame by frame on the cached renders → packets (real bytes) → compositor → scores."""
    z, fps = d["z"], d["fps"]
    enc = SenderPipeline.from_model_dir(d["model"]).stream_encoder(fps)
    guard, comp = SenderGuard(cfg, fps), Compositor()
    out, alphas, pictures, nbytes = [], [], 0, 0
    for i in range(len(z["gt256"])):
        packets, dec = guard.step(i, z["gt256"][i], z[f"r{cfg.check_size}"][i])
        for p in packets:
            nbytes += len(enc.fallback(p.index, p.alpha, p.picture))
            pictures += bool(p.picture)
        comp.add(packets)
        out.append(comp.compose(i, z["r256"][i]))
        alphas.append(dec.alpha)
    out = np.stack(out)
    gt = z["gt256"]
    n = len(gt)
    p_g = np.array([_psnr(a, b) for a, b in zip(gt, out)])
    l_g = lpips_batch(gt, out)
    return {
        "frames_in_fallback": round(float(np.mean(np.array(alphas) > 0)), 3),
        "pictures": pictures,
        "fallback_bytes": nbytes,
        "fallback_kbps": round(nbytes * 8 / (n / fps) / 1000, 3),
        "psnr": round(float(p_g.mean()), 3),
        "lpips": round(float(l_g.mean()), 4),
        "frames_worse_than_freeze_psnr": round(float(np.mean(p_g < d["p_freeze"])), 3),
        "per_frame_psnr": p_g,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=Path, required=True, help="directory of <clip>/{dataset,MODEL}")
    ap.add_argument("--model-name", default="model_1min")
    ap.add_argument("--cache", type=Path, default=None, help="cached renders (<clip>.npz), optional")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "guard.json")
    args = ap.parse_args()
    clips = sorted(p.parent.parent for p in args.clips.glob(f"*/{args.model_name}/model.json"))
    if not clips:
        raise SystemExit(f"{args.clips}: no <clip>/{args.model_name} models")
    per_clip: dict[str, dict] = {}
    pooled: dict[str, list] = {}
    data = {}
    for clip in clips:
        d = load_clip(clip, args.model_name, args.cache)
        z = d["z"]
        gt, r = z["gt256"], z["r256"]
        fz = B.freeze_frame(gt[:1])
        freeze = fz.frames[0]
        d["p_freeze"] = np.array([_psnr(a, freeze) for a in gt])
        p_r = np.array([_psnr(a, b) for a, b in zip(gt, r)])
        l_r, l_f = lpips_batch(gt, r), lpips_batch(gt, np.repeat(freeze[None], len(gt), 0))
        worse = p_r < d["p_freeze"]
        est = {"stats_score": d["score"], **{f"stats_{k}": v for k, v in d["components"].items()}}
        for s in CHECKS:
            f_small = resize_frames(freeze[None], s)[0]
            est[f"render{s}_psnr"] = np.array([_psnr(a, b) for a, b in zip(z[f"gt{s}"], z[f"r{s}"])])
            est[f"render{s}_margin"] = est[f"render{s}_psnr"] - np.array(
                [_psnr(a, f_small) for a in z[f"gt{s}"]]
            )
        truth = {
            "psnr": p_r,
            "lpips": l_r,
            "psnr_over_freeze": p_r - d["p_freeze"],
            "lpips_over_freeze": l_r - l_f,
        }
        per_clip[clip.name] = {
            "test_frames": len(gt),
            "render": {"psnr": round(float(p_r.mean()), 3), "lpips": round(float(l_r.mean()), 4)},
            "freeze": {"psnr": round(float(d["p_freeze"].mean()), 3), "lpips": round(float(l_f.mean()), 4),
                       "kbps": round(fz.kbps, 3)},
            "frames_render_worse_than_freeze": {"psnr": round(float(worse.mean()), 3),
                                                "lpips": round(float(np.mean(l_r > l_f)), 3)},
            "cost_ms_per_frame": {"stats": round(d["stats_ms"], 3),
                                  **{f"render{s}": round(d["render_ms"][s], 1) for s in CHECKS}},
            "stats_fit_s": round(d["fit_s"], 2),
            "correlation": {f"{e}~{t}": _corr(v, tv) for e, v in est.items() for t, tv in truth.items()
                            if not e.startswith("stats_") or t == "psnr"
                            or e in ("stats_score", "stats_joint", "stats_angles")},
        }  # fmt: skip
        for k, v in {**est, **{f"truth_{k}": v for k, v in truth.items()}, "worse": worse}.items():
            pooled.setdefault(k, []).append(np.asarray(v))
        data[clip.name] = d
        print(
            clip.name,
            json.dumps(per_clip[clip.name]["render"]),
            json.dumps(per_clip[clip.name]["freeze"]),
            flush=True,
        )
    P = {k: np.concatenate(v) for k, v in pooled.items()}
    worse = P["worse"].astype(bool)
    truths = [k for k in P if k.startswith("truth_")]
    pooled_corr = {
        f"{e}~{t[6:]}": _corr(P[e], P[t]) for e in P if e not in truths and e != "worse" for t in truths
    }
    # thresholds for "render worse than the frozen frame" (PSNR), pooled over the clips
    t_stats = _best_threshold(P["stats_score"], worse, True)
    thresholds = {
        "stats_score": {"fires_when": "score > t", "t": t_stats, **_pr(P["stats_score"] > t_stats, worse)},
    }
    for s in CHECKS:
        m = P[f"render{s}_margin"]
        thresholds[f"render{s}_margin_0dB"] = {"fires_when": "margin < 0 dB", "t": 0.0, **_pr(m < 0, worse)}
        t_best = _best_threshold(m, worse, False)
        thresholds[f"render{s}_margin_best"] = {
            "fires_when": "margin < t",
            "t": t_best,
            **_pr(m < t_best, worse),
        }
    for name in per_clip:
        d = data[name]
        i = list(data).index(name)
        lo = sum(len(data[c]["idx"]) for c in list(data)[:i])
        sl = slice(lo, lo + len(d["idx"]))
        w = worse[sl]
        per_clip[name]["guard_pr"] = {
            "stats_score": _pr(P["stats_score"][sl] > t_stats, w),
            "render64_margin_0dB": _pr(P["render64_margin"][sl] < 0, w),
        }
    # fallback pictures: bits vs quality at 256², every 12th test frame of every clip
    sample = np.concatenate([data[c]["z"]["gt256"][::12] for c in data])
    pictures = []
    for codec, s, q in PICTURES:
        t = time.perf_counter()
        payloads = [encode_picture(g, s, codec, q) for g in sample]
        enc_ms = (time.perf_counter() - t) / len(sample) * 1000
        t = time.perf_counter()
        dec = np.stack([upsample(decode_picture(p), SIZE, SIZE) for p in payloads])
        dec_ms = (time.perf_counter() - t) / len(sample) * 1000
        pictures.append({
            "codec": codec, "size": s, "quality": q,
            "bits": round(float(np.mean([8 * len(p) for p in payloads])), 1),
            "psnr": round(float(np.mean([_psnr(a, b) for a, b in zip(sample, dec)])), 3),
            "lpips": round(float(lpips_batch(sample, dec).mean()), 4),
            "encode_ms": round(enc_ms, 1), "decode_ms": round(dec_ms, 1),
        })  # fmt: skip
        print("picture", json.dumps(pictures[-1]), flush=True)
    # the guard + fallback, simulated
    cfg = GuardConfig()
    sims = {}
    for name, d in data.items():
        sim = simulate(d, cfg)
        fk = feature_kbps(d["model"], d["x"], d["pose"], d["fps"])
        per = per_clip[name]
        sim.pop("per_frame_psnr")
        sims[name] = {
            **sim,
            "features_kbps": round(fk, 3),
            "total_kbps": round(fk + sim["fallback_kbps"], 3),
            "without_guard": {**per["render"], "kbps": round(fk, 3)},
            "freeze": per["freeze"],
        }
        print("guard", name, json.dumps(sims[name]), flush=True)
    out = {
        "benchmark": "sender-side quality guard and fallback (issue 17)",
        "machine": machine_record(),
        "setup": {
            "clips": str(args.clips),
            "model": args.model_name,
            "size": SIZE,
            "features": "dataset features of the test split (as tracked), not codec-decoded",
            "freeze": "first test frame, x265 intra CRF 23 (nerfvc eval's freeze)",
            "worse": "PSNR of the render < PSNR of the frozen frame, per frame",
            "guard_config": cfg.__dict__,
            "header_bytes": HEADER_SIZE,
        },
        "clips": per_clip,
        "pooled": {"frames": len(worse), "worse_share": round(float(worse.mean()), 3),
                   "correlation": pooled_corr},
        "thresholds": thresholds,
        "pictures": pictures,
        "fallback": sims,
    }  # fmt: skip
    write_json_atomic(args.output, out)
    write_bytes_atomic(args.output.with_suffix(".md"), markdown(out).encode())
    return 0


def markdown(out: dict) -> str:
    """The short summary table of ``guard.json``."""
    lines = [
        "# Guard calibration (benchmarks/guard.py)",
        "",
        f"Machine: {out['machine']['cpu_model']}, {out['machine']['threads']} threads, "
        f"commit {out['machine']['commit']}, {out['machine']['date']}. {out['setup']['features']}; "
        f"worse = {out['setup']['worse']}; freeze = {out['setup']['freeze']}.",
        "",
        "| clip | frames | render PSNR / LPIPS | freeze PSNR / LPIPS | worse than freeze (PSNR) | "
        "Spearman stats score~PSNR | Spearman render64~PSNR | Spearman render64 margin~margin | "
        "in fallback | pictures | fallback kbps | features kbps | guarded PSNR / LPIPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in out["clips"].items():
        f = out["fallback"][name]
        cc = c["correlation"]
        lines.append(
            f"| {name} | {c['test_frames']} | {c['render']['psnr']:.2f} / {c['render']['lpips']:.3f} | "
            f"{c['freeze']['psnr']:.2f} / {c['freeze']['lpips']:.3f} | "
            f"{100 * c['frames_render_worse_than_freeze']['psnr']:.0f}% | "
            f"{cc['stats_score~psnr']['spearman']} | {cc['render64_psnr~psnr']['spearman']} | "
            f"{cc['render64_margin~psnr_over_freeze']['spearman']} | {100 * f['frames_in_fallback']:.0f}% | "
            f"{f['pictures']} | {f['fallback_kbps']:.2f} | {f['features_kbps']:.2f} | "
            f"{f['psnr']:.2f} / {f['lpips']:.3f} |"
        )
    pc = out["pooled"]["correlation"]
    lines += [
        "",
        f"Pooled ({out['pooled']['frames']} frames, {100 * out['pooled']['worse_share']:.0f}% worse):",
    ]
    for k in ("stats_score~psnr", "stats_joint~psnr", "render64_psnr~psnr", "render32_psnr~psnr",
              "render64_margin~psnr_over_freeze", "render32_margin~psnr_over_freeze"):  # fmt: skip
        lines.append(f"- {k}: Pearson {pc[k]['pearson']}, Spearman {pc[k]['spearman']}")
    lines += ["", "Thresholds (render worse than the frozen frame, pooled):"]
    for k, t in out["thresholds"].items():
        lines.append(f"- {k} ({t['fires_when']}, t = {t['t']:.3g}): precision {t['precision']}, "
                     f"recall {t['recall']}, fires on {100 * t['fired']:.0f}% of frames")  # fmt: skip
    lines += ["", "| picture | bits | PSNR | LPIPS | encode ms |", "|---|---|---|---|---|"]
    for p in out["pictures"]:
        lines.append(f"| {p['codec']} {p['size']} px q {p['quality']} | {p['bits']:.0f} | {p['psnr']:.2f} | "
                     f"{p['lpips']:.3f} | {p['encode_ms']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
