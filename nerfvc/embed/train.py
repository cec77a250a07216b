"""Stage-1 training of the expression embedding on sender geometry (no renderer needed), and its files.

Loss per frame = landmark distortion + λ · rate:

- distortion: mean squared pixel error over the face model's landmarks between the original expression and
  ``decode(encode(window) + quantization noise)``, both posed with the frame's pose and projected with the
  dataset camera;
- rate: the codec's differentiable code length (:func:`nerfvc.codec.estimate_bits`) of the code under the
  delta-frame model the codec fits (AR(1) prediction from the previous noisy code, Laplace scale = mean
  absolute innovation), with steps that are uniform in landmark space at the raw-expression codec's
  ``τ`` (so ``Q = 1`` means the same landmark error for raw and embedded codes).

Files in a MODEL directory: ``embed.safetensors`` (weights; the config as JSON in the safetensors
metadata) and ``embed.json`` (config + training summary, informative). ``codec.json`` is then fitted on the
*codes* of the training frames (:func:`fit_code_tables`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerfvc.codec.entropy import estimate_bits
from nerfvc.codec.fit import fit_codec
from nerfvc.codec.tables import CODEC_FILE, POSE_DIM, CodecTables
from nerfvc.embed.encoder import EmbedConfig, ExpressionEmbedding, causal_windows
from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.fsutil import atomic_path, write_json_atomic
from nerfvc.modeldir import read_model_manifest

EMBED_FILE = "embed.safetensors"
EMBED_JSON = "embed.json"


# -- files -------------------------------------------------------------------------------------------------
def save_embedding(
    model: ExpressionEmbedding, directory: str | Path, info: dict[str, Any] | None = None
) -> None:
    """Write ``embed.safetensors`` (+ ``embed.json``) into ``directory`` (before finalizing the model)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    config = json.dumps(model.config.to_dict(), sort_keys=True)
    with atomic_path(d / EMBED_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "nerfvc-embed", "version": "1", "config": config})
    write_json_atomic(d / EMBED_JSON, {"config": model.config.to_dict(), **(info or {})})


def has_embedding(directory: str | Path) -> bool:
    """Whether a MODEL directory has an embedding encoder."""
    return (Path(directory) / EMBED_FILE).exists()


def load_embedding(directory: str | Path) -> ExpressionEmbedding:
    """Load ``embed.safetensors`` from a MODEL directory (eval mode)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(directory) / EMBED_FILE
    if not path.exists():
        raise InputError(f"{directory}: no {EMBED_FILE}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "nerfvc-embed":
            raise ValueError("not a nerfvc embedding")
        config = EmbedConfig(**json.loads(meta["config"]))
        model = ExpressionEmbedding(config)
        model.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ModelMismatchError(f"{path}: unusable embedding ({e})") from e
    return model.eval()


def load_model_embedding(model: str | Path) -> ExpressionEmbedding | None:
    """The MODEL directory's expression embedding, or None when it has none; :class:`ModelMismatchError`
    unless ``embed.safetensors`` is part of the model and ``codec.json`` codes its code."""
    if not (Path(model) / EMBED_FILE).exists():
        return None
    if EMBED_FILE not in read_model_manifest(model, verify=False)["files"]:
        raise ModelMismatchError(f"{model}: {EMBED_FILE} is not part of the model (re-finalize the model)")
    emb = load_embedding(model)
    if CodecTables.load(model).code_dim != emb.config.code_dim:
        raise ModelMismatchError(
            f"{model}: {CODEC_FILE} does not code the embedding's {emb.config.code_dim}-d code"
        )
    return emb


@torch.no_grad()
def encode_expressions(model: ExpressionEmbedding, expression: np.ndarray) -> np.ndarray:
    """A clip's expressions ``(N, E)`` → codes ``(N, C)`` float32, each from its causal window.

    Identical to feeding the frames one by one to :class:`~nerfvc.embed.encoder.CausalEncoderState`.
    """
    expression = np.asarray(expression, np.float32)
    if expression.ndim != 2 or expression.shape[1] != model.config.in_dim:
        raise ModelMismatchError(
            f"expression has shape {expression.shape}, the embedding expects (N, {model.config.in_dim})"
        )
    return model.eval().encode_sequence(torch.from_numpy(expression)).numpy().astype(np.float32)


@torch.no_grad()
def decode_codes(model: ExpressionEmbedding, code: np.ndarray) -> np.ndarray:
    """Codes ``(N, C)`` → expressions ``(N, E)`` float32 for the NeRF (receiver side)."""
    code = np.asarray(code, np.float32)
    if code.ndim != 2 or code.shape[1] != model.config.code_dim:
        raise ModelMismatchError(
            f"code has shape {code.shape}, the embedding expects (N, {model.config.code_dim})"
        )
    return model.eval().decode(torch.from_numpy(code)).numpy().astype(np.float32)


def expansion_matrix(model: ExpressionEmbedding) -> np.ndarray:
    """The receiver's linear map ``(E, C)`` float64: ``decode(code) = M @ code``."""
    with torch.no_grad():
        s = model.scale.double()
        m = s[:, None] * model.expand.weight.double() / s[None, : model.config.code_dim]
    return m.numpy()


# -- codec tables on codes ---------------------------------------------------------------------------------
def landmark_tau(face_model: tuple[np.ndarray, np.ndarray], raw_tables: CodecTables) -> float:
    """The landmark-space step ``τ`` (m RMS per landmark at Q = 1) of raw-expression tables."""
    mean, basis = face_model
    return float(raw_tables.base_step[POSE_DIM] * np.linalg.norm(basis[:, 0]) / math.sqrt(len(mean)))


def fit_code_tables(
    code: np.ndarray,
    pose: np.ndarray,
    valid: np.ndarray | None,
    face_model: tuple[np.ndarray, np.ndarray] | None,
    expand: np.ndarray | None,
    tau: float | None = None,
    **kw: Any,
) -> CodecTables:
    """Codec tables for embedding codes ``(N, C)``: landmark-uniform steps through ``expand (E, C)``.

    With ``tau`` (from :func:`landmark_tau` of the raw-expression tables) the steps are rescaled so that
    ``Q = 1`` gives the raw codec's landmark-space step (otherwise τ would follow the codes' own jitter).
    """
    t = fit_codec(code, pose, valid, face_model=face_model, code_to_expression=expand, **kw)
    if tau is None or face_model is None or expand is None:
        return t
    mean, basis = face_model
    w0 = np.linalg.norm(basis @ expand, axis=0) / math.sqrt(len(mean))
    known = w0 > 1e-12
    if not known.any():
        return t
    i = int(np.argmax(known))
    tau_now = t.base_step[POSE_DIM + i] * w0[i]
    return fit_codec(
        code, pose, valid, face_model=face_model, code_to_expression=expand, step_scale=tau / tau_now, **kw
    )


# -- geometry ----------------------------------------------------------------------------------------------
@dataclass
class Geometry:
    """What the landmark distortion needs: face model and camera (torch float32)."""

    mean: torch.Tensor  # (L, 3) canonical mean shape, metres
    basis: torch.Tensor  # (3L, E) expression basis
    fx: float
    fy: float
    cx: float
    cy: float

    def project(self, expression: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Expressions ``(B, E)`` and poses ``(B, 12)`` → landmark pixels ``(B, L, 2)``."""
        shape = self.mean + (expression @ self.basis.T).reshape(len(expression), -1, 3)
        r = pose[:, :9].reshape(-1, 3, 3)
        x = torch.einsum("bij,blj->bli", r, shape) + pose[:, None, 9:12]
        z = x[..., 2].clamp(min=1e-6)
        return torch.stack([self.fx * x[..., 0] / z + self.cx, self.fy * x[..., 1] / z + self.cy], -1)


@dataclass
class DatasetGeometry:
    """A DATASET directory's features, face model and camera (numpy) with its train/test split."""

    expression: np.ndarray  # (N, E) float32
    pose: np.ndarray  # (N, 12) float32
    valid: np.ndarray  # (N,) bool
    face_model: tuple[np.ndarray, np.ndarray]  # mean (L, 3), basis (3L, E) float64
    camera: dict[str, float]
    fps: float
    train: tuple[int, int]
    test: tuple[int, int]
    landmarks: np.ndarray | None = None  # (N, 478, 3) tracked landmarks, pixels

    def geometry(self) -> Geometry:
        m, b = self.face_model
        c = self.camera
        return Geometry(
            torch.as_tensor(m, dtype=torch.float32),
            torch.as_tensor(b, dtype=torch.float32),
            float(c["fx"]),
            float(c["fy"]),
            float(c["cx"]),
            float(c["cy"]),
        )


def load_dataset_geometry(path: str | Path) -> DatasetGeometry:
    """Read ``features.npz``, ``face_model.safetensors`` and ``manifest.json`` of a DATASET directory."""
    from nerfvc.datasetdir import FACE_MODEL_FILE, dataset_split, read_features, read_manifest
    from nerfvc.face.model import load_face_model

    d = Path(path)
    man = read_manifest(d)
    feats = read_features(d)
    face = load_face_model(d)
    if face is None:
        raise InputError(f"{d}: no {FACE_MODEL_FILE}")
    n = len(feats["pose"])
    train, test = dataset_split({"num_frames": n, **man})
    return DatasetGeometry(
        expression=feats["expression"].astype(np.float32),
        pose=feats["pose"].astype(np.float32),
        valid=feats.get("valid", np.ones(n, bool)).astype(bool),
        face_model=face,
        camera=man["camera"],
        fps=float(man.get("fps", 25.0)),
        train=train,
        test=test,
        landmarks=feats.get("landmarks"),
    )


# -- training ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Stage-1 training settings."""

    lam: float = 0.0  # rate weight, px² per bit (0 = distortion only, still with quantization noise)
    minutes: float = 1.0  # training time budget
    max_iters: int = 3000
    lr: float = 2e-3
    step_index: int = 0  # codec step index whose quantization noise is simulated
    refit_every: int = 100  # refresh the code's mean / AR coefficients from the current codes
    weight_decay: float = 1e-4
    seed: int = 0
    log: list[dict[str, float]] = field(default_factory=list)


def code_weights(model: ExpressionEmbedding, basis: torch.Tensor, n_landmarks: int) -> torch.Tensor:
    """Differentiable RMS landmark displacement (m) per unit of each code dim ``(C,)``."""
    c = model.config.code_dim
    m = model.scale[:, None] * model.expand.weight / model.scale[None, :c]  # (E, C)
    return torch.linalg.vector_norm(basis @ m, dim=0) / math.sqrt(n_landmarks)


def train_embedding(
    expression: np.ndarray,
    pose: np.ndarray,
    valid: np.ndarray | None,
    face_model: tuple[np.ndarray, np.ndarray],
    camera: dict[str, float],
    embed_config: EmbedConfig | None = None,
    config: TrainConfig | None = None,
    tau: float | None = None,
) -> ExpressionEmbedding:
    """Train an embedding on training frames ``expression (N, E)``, ``pose (N, 12)`` (consecutive frames).

    ``tau``: landmark-space step at Q = 1 (default: from raw-expression codec tables fitted here).
    Returns the model in eval mode; ``config.log`` receives a few progress records.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only contend (60x slower on a loaded CPU)
    try:
        return _train(expression, pose, valid, face_model, camera, embed_config, config or TrainConfig(), tau)
    finally:
        torch.set_num_threads(threads)


def _train(
    expression: np.ndarray,
    pose: np.ndarray,
    valid: np.ndarray | None,
    face_model: tuple[np.ndarray, np.ndarray],
    camera: dict[str, float],
    embed_config: EmbedConfig | None,
    cfg: TrainConfig,
    tau: float | None,
) -> ExpressionEmbedding:
    torch.manual_seed(cfg.seed)
    expr = np.asarray(expression, np.float32)
    n, e_dim = expr.shape
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    ec = embed_config or EmbedConfig(in_dim=e_dim)
    if ec.in_dim != e_dim:
        raise ModelMismatchError(f"expression has {e_dim} dims, the embedding config says {ec.in_dim}")
    if tau is None:
        raw = fit_codec(expr, pose, valid, face_model=face_model, predictor="diag", intra=False)
        tau = landmark_tau(face_model, raw)
    geo = Geometry(
        torch.as_tensor(face_model[0], dtype=torch.float32),
        torch.as_tensor(face_model[1], dtype=torch.float32),
        *(float(camera[k]) for k in ("fx", "fy", "cx", "cy")),
    )
    x = torch.from_numpy(expr)
    p = torch.from_numpy(np.asarray(pose, np.float32))
    target = geo.project(x, p).detach()  # (N, L, 2)
    scale = x[torch.from_numpy(valid)].std(0).clamp(min=1e-8)
    model = ExpressionEmbedding(ec, scale=scale)
    windows = causal_windows(x, ec.window)
    pair = torch.from_numpy(valid[1:] & valid[:-1])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    q = 2.0 ** (cfg.step_index / 16)
    n_lm = len(face_model[0])
    mu_m = ar = None
    t_end = time.monotonic() + 60 * cfg.minutes
    it = 0
    model.train()
    while it < cfg.max_iters and time.monotonic() < t_end:
        if it % cfg.refit_every == 0:  # codec-like statistics of the current codes (AR(1) predictor)
            with torch.no_grad():
                c0 = model.encode(windows)
                mu_m = c0.mean(0)
                z = c0 - mu_m
                zi, zo = z[:-1][pair], z[1:][pair]
                ar = ((zi * zo).mean(0) / (zi**2).mean(0).clamp(min=1e-30)).clamp(-1, 1)
        code = model.encode(windows)  # (N, C)
        step = tau * q / code_weights(model, geo.basis, n_lm).clamp(min=1e-12)  # (C,)
        noisy = code + (torch.rand_like(code) - 0.5) * step
        recon = model.decode(noisy)
        dist = ((geo.project(recon, p) - target) ** 2).sum(-1).mean()  # px² per landmark
        loss = dist
        # rate (also logged when it does not enter the loss)
        pred = mu_m + ar * (noisy[:-1] - mu_m)  # delta-frame prediction from the previous decoded code
        resid = (code[1:] - pred)[pair]
        b = resid.abs().mean(0).clamp(min=1e-12)  # Laplace scale (MLE) of the innovations
        bits = estimate_bits(code[1:][pair], b, step, mean=pred[pair]).mean()
        if cfg.lam > 0:
            loss = loss + cfg.lam * bits
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 50 == 0:
            cfg.log.append(_record(it, dist, bits, loss))
        it += 1
    cfg.log.append(_record(it, dist, bits, loss))
    return model.eval()


def _record(it: int, dist: torch.Tensor, bits: torch.Tensor, loss: torch.Tensor) -> dict[str, float]:
    return {
        "iter": it,
        "px2": float(dist.detach()),
        "bits": float(bits.detach()),
        "loss": float(loss.detach()),
    }


def embed_train_dir(
    dataset: str | Path,
    out: str | Path,
    code_dim: int = EmbedConfig.code_dim,
    lam: float = TrainConfig.lam,
    minutes: float = TrainConfig.minutes,
    window: int = EmbedConfig.window,
    step_index: int = TrainConfig.step_index,
    max_iters: int = TrainConfig.max_iters,
) -> dict[str, Any]:
    """Train on a DATASET's train split, write the embedding + face model + codec tables (fitted on the
    codes) into the MODEL directory ``out`` and (re)finalize its manifest. Returns a summary."""
    from nerfvc.modeldir import MANIFEST, finalize_model_dir, read_model_manifest

    ds = load_dataset_geometry(dataset)
    a, b = ds.train
    sl = slice(a, b)
    ec = EmbedConfig(in_dim=ds.expression.shape[1], code_dim=code_dim, window=window)
    raw = fit_codec(ds.expression[sl], ds.pose[sl], ds.valid[sl], face_model=ds.face_model)
    tau = landmark_tau(ds.face_model, raw)
    tc = TrainConfig(lam=lam, minutes=minutes, step_index=step_index, max_iters=max_iters)
    t0 = time.perf_counter()
    model = train_embedding(
        ds.expression[sl], ds.pose[sl], ds.valid[sl], ds.face_model, ds.camera, ec, tc, tau
    )
    secs = time.perf_counter() - t0
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    for name in ("face_model.safetensors", "face_model.json"):
        if (Path(dataset) / name).exists():
            shutil.copyfile(Path(dataset) / name, o / name)
    code = encode_expressions(model, ds.expression)
    tables = fit_code_tables(code[sl], ds.pose[sl], ds.valid[sl], ds.face_model, expansion_matrix(model), tau)
    tables.save(o / CODEC_FILE)
    info = {
        "dataset": str(dataset),
        "lambda": lam,
        "train_frames": [a, b],
        "train_seconds": round(secs, 1),
        "iterations": tc.log[-1]["iter"],
        "final": tc.log[-1],
        "tau_m": tau,
    }
    save_embedding(model, o, info)
    extra = {}
    if (o / MANIFEST).exists():
        old = read_model_manifest(o, verify=False)
        extra = {k: v for k, v in old.items() if k not in ("format", "version", "fingerprint", "files")}
    info["fingerprint"] = finalize_model_dir(o, extra)
    return info
