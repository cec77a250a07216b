"""Stage 2: fine-tune the embedding end to end through the (frozen) NeRF renderer.

The NeRF is conditioned on ``decode(encode(window) + quantization noise)`` of each training ray's frame;
the loss is the trainer's own rendering loss (photometric + mask terms) plus ``geo_weight`` × the stage-1
objective (landmark px² + λ · code bits), so the rendering gradient flows into the sender encoder while
the geometry/rate terms keep it a cheap, faithful code. The NeRF weights are not changed (the MODEL's
``nerf.safetensors`` stays valid); only ``embed.safetensors`` and the codec tables on its codes are
rewritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerfvc.codec.entropy import estimate_bits
from nerfvc.codec.tables import CODEC_FILE
from nerfvc.embed.encoder import EmbedConfig, ExpressionEmbedding, causal_windows
from nerfvc.embed.train import (
    code_weights,
    encode_expressions,
    expansion_matrix,
    fit_code_tables,
    has_embedding,
    landmark_tau,
    load_dataset_geometry,
    load_embedding,
    save_embedding,
)
from nerfvc.errors import InputError
from nerfvc.metrics import psnr, psnr_from_mse, ssim


@dataclass
class FinetuneConfig:
    """Stage-2 settings."""

    lam: float = 0.01  # rate weight inside the geometry term, px² per bit
    geo_weight: float = 1e-3  # weight of (px² + λ·bits) next to the rendering loss (MSE of [0,1] colours)
    minutes: float = 3.0
    max_iters: int = 100_000
    batch_rays: int = 1024
    lr: float = 5e-4
    step_index: int = 0
    seed: int = 0


def finetune_through_renderer(
    model_dir: str | Path, dataset: str | Path, config: FinetuneConfig | None = None, size: str | int = 128
) -> dict[str, Any]:
    """Fine-tune the MODEL's embedding (PCA-truncation init if it has none) through its NeRF on the
    DATASET's training frames; rewrite ``embed.safetensors`` + ``codec.json`` and re-finalize the model.

    Returns a summary (iterations, seconds, first/last losses, fingerprint).
    """
    from nerfvc.codec import fit_codec
    from nerfvc.modeldir import finalize_model_dir, read_model_manifest
    from nerfvc.render.renderer import load_nerf
    from nerfvc.train.dataset import load_dataset
    from nerfvc.train.trainer import TrainConfig, compute_loss

    cfg = config or FinetuneConfig()
    torch.manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nerf, _, _ = load_nerf(model_dir)
        if nerf.cfg.torso_dims:
            raise InputError(
                f"{model_dir}: expression embeddings need a model without torso motion "
                "(train it with `nerfvc train --no-torso`)"
            )
        for p in nerf.parameters():
            p.requires_grad_(False)
        nerf.train()
        ds = load_dataset(dataset, size, torso=False)
        geo_ds = load_dataset_geometry(dataset)
        face = geo_ds.face_model
        tr = slice(*geo_ds.train)
        x_all = ds.expression.float()
        if has_embedding(model_dir):
            emb = load_embedding(model_dir)
        else:
            ec = EmbedConfig(in_dim=x_all.shape[1])
            emb = ExpressionEmbedding(ec, scale=x_all[tr].std(0).clamp(min=1e-8))
        emb.train()
        raw = fit_codec(geo_ds.expression[tr], geo_ds.pose[tr], geo_ds.valid[tr], face_model=face)
        tau = landmark_tau(face, raw)
        geo = geo_ds.geometry()
        windows = causal_windows(x_all, emb.config.window)
        train_idx = torch.from_numpy(ds.train_idx)
        target = geo.project(x_all[train_idx], ds.pose[train_idx].float()).detach()
        opt = torch.optim.Adam(emb.parameters(), lr=cfg.lr)
        tcfg = TrainConfig()
        q = 2.0 ** (cfg.step_index / 16)
        h, w = ds.masks.shape[1:]
        log: list[dict[str, float]] = []
        t_end = time.monotonic() + 60 * cfg.minutes
        it = 0
        t0 = time.perf_counter()
        while it < cfg.max_iters and time.monotonic() < t_end:
            code = emb.encode(windows[train_idx])  # (n, C)
            step = tau * q / code_weights(emb, geo.basis, len(face[0])).clamp(min=1e-12)
            noisy = code + (torch.rand_like(code) - 0.5) * step
            expr = emb.decode(noisy)  # (n, E)
            batch = _sample(ds, cfg.batch_rays, h, w)
            k = batch.pop("k")
            out = nerf.render_rays(
                batch["dirs"], batch["uv"], expr[k], batch["pose"], batch["background"], train=True
            )
            render_loss, mse = compute_loss(out, batch, tcfg)
            px2 = ((geo.project(expr, ds.pose[train_idx].float()) - target) ** 2).sum(-1).mean()
            # delta-frame rate with the previous decoded code as prediction (AR(1) ≈ 1 at 25-30 fps;
            # train_idx frames are consecutive)
            pred = noisy[:-1]
            b = (code[1:] - pred).abs().mean(0).clamp(min=1e-12)
            bits = estimate_bits(code[1:], b, step, mean=pred).mean()
            loss = render_loss + cfg.geo_weight * (px2 + cfg.lam * bits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if it % 20 == 0:
                log.append(
                    {
                        "iter": it,
                        "psnr": psnr_from_mse(max(float(mse.detach()), 1e-10)),
                        "px2": float(px2.detach()),
                        "bits": float(bits.detach()),
                    }
                )
            it += 1
        secs = time.perf_counter() - t0
        emb.eval()
        d = Path(model_dir)
        code_np = encode_expressions(emb, geo_ds.expression)
        tables = fit_code_tables(
            code_np[tr], geo_ds.pose[tr], geo_ds.valid[tr], face, expansion_matrix(emb), tau
        )
        tables.save(d / CODEC_FILE)
        info = {"stage": 2, "iterations": it, "seconds": round(secs, 1), "log": log[:1] + log[-1:]}
        info.update({"lambda": cfg.lam, "geo_weight": cfg.geo_weight, "size": size, "tau_m": tau})
        save_embedding(emb, d, info)
        old = read_model_manifest(d, verify=False)
        extra = {k: v for k, v in old.items() if k not in ("format", "version", "fingerprint", "files")}
        info["fingerprint"] = finalize_model_dir(d, extra)
        return info
    finally:
        torch.set_num_threads(threads)


def _sample(ds: Any, n: int, h: int, w: int) -> dict[str, torch.Tensor]:
    """Random training rays (uniform over the frame) with ``k``, the index into the training frames."""
    from nerfvc.train.dataset import ray_batch

    k = torch.randint(0, len(ds.train_idx), (n,))
    f = torch.from_numpy(ds.train_idx)[k]
    y = torch.randint(0, h, (n,))
    x = torch.randint(0, w, (n,))
    return {"k": k, **ray_batch(ds, f, y, x)}


def render_metrics(
    model_dir: str | Path,
    dataset: str | Path,
    expressions: dict[str, np.ndarray],
    pose: np.ndarray,
    frames: np.ndarray,
    size: int = 128,
) -> dict[str, dict[str, float]]:
    """PSNR/SSIM (+ LPIPS-Alex when ``nerfvc.eval`` is available) of NeRF renders of ``frames`` (dataset
    indices) for several expression sets (N, E) each (indexed like the dataset) with the given poses (N, 12),
    against the ground-truth frames at ``size``."""
    from nerfvc.render.renderer import Renderer
    from nerfvc.train.dataset import load_dataset

    ds = load_dataset(dataset, size, torso=False)
    r = Renderer.from_model_dir(model_dir)
    w, h = ds.camera.width, ds.camera.height
    from nerfvc.eval.lpips import lpips_batch

    out = {}
    for name, ex in expressions.items():
        ps, ss, imgs = [], [], []
        for f in frames:
            img = (r.render_float(ex[f], pose[f], w, h) * 255 + 0.5).byte().numpy()
            gt = ds.frames[f].numpy()
            ps.append(psnr(img, gt))
            ss.append(ssim(img, gt))
            imgs.append(img)
        out[name] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "frames": len(frames)}
        gt_all = ds.frames[torch.as_tensor(frames)].numpy()
        out[name]["lpips"] = float(np.mean(lpips_batch(gt_all, np.stack(imgs))))
    return out
