"""Stage-1 embedding training, its files, and the codec wiring (bitstream + CLI) on tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nerfvc.cli
from nerfvc.codec import decode_stream, encode_stream, estimate_bits, fit_codec
from nerfvc.codec.coder import reference_stream
from nerfvc.codec.synthetic import synthetic_features
from nerfvc.embed import EmbedConfig
from nerfvc.embed.train import (
    TrainConfig,
    decode_codes,
    encode_expressions,
    expansion_matrix,
    fit_code_tables,
    landmark_tau,
    load_embedding,
    save_embedding,
    train_embedding,
)

FP = "0123456789abcdef"
E, C, L = 12, 5, 24
CAMERA = {"fx": 300.0, "fy": 300.0, "cx": 128.0, "cy": 128.0, "width": 256, "height": 256}


def _face(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(L, 3)) * 0.05
    basis, _ = np.linalg.qr(rng.normal(size=(3 * L, E)))
    return mean, basis


@pytest.fixture(scope="module")
def data():
    """Synthetic expressions (N, E) scaled like real PCA coefficients (metres), poses, face model."""
    expr, pose = synthetic_features(240, E, seed=3, jitter=0.03)
    return (expr * 0.01).astype(np.float32), pose, _face()


def _train(data, lam: float, iters: int = 60) -> tuple:
    expr, pose, face = data
    raw = fit_codec(expr[:200], pose[:200], face_model=face, predictor="diag", intra=False)
    tau = landmark_tau(face, raw)
    cfg = TrainConfig(lam=lam, max_iters=iters, minutes=5, lr=5e-3, refit_every=20)
    model = train_embedding(expr[:200], pose[:200], None, face, CAMERA, EmbedConfig(E, C, 3), cfg, tau)
    code = encode_expressions(model, expr)
    tables = fit_code_tables(code[:200], pose[:200], None, face, expansion_matrix(model), tau)
    return model, code, tables, cfg


@pytest.fixture(scope="module")
def trained(data):
    return _train(data, 0.0)


def test_trained_embedding_round_trips_through_the_bitstream(data, trained):
    expr, pose, _ = data
    model, code, tables, _ = trained
    assert code.shape == (len(expr), C) and code.dtype == np.float32
    stream = encode_stream(tables, FP, code[200:], pose[200:], 25.0, step_index=-8)
    dcode, dpose, rep = decode_stream(stream, tables, FP)
    ref_code, ref_pose = reference_stream(tables, code[200:], pose[200:], -8)
    assert rep.valid.all()
    np.testing.assert_allclose(dcode, ref_code, rtol=0, atol=1e-6)  # decoded code == encoder code quantized
    np.testing.assert_allclose(dpose, ref_pose, rtol=0, atol=1e-6)
    dexpr = decode_codes(model, dcode)  # receiver: expression == expand(dequantized code)
    assert dexpr.shape == (len(dcode), E) and dexpr.dtype == np.float32
    np.testing.assert_allclose(dexpr, dcode.astype(np.float64) @ expansion_matrix(model).T, atol=1e-6)


def test_save_load_is_exact(tmp_path, trained, data):
    model = trained[0]
    save_embedding(model, tmp_path, {"note": "test"})
    again = load_embedding(tmp_path)
    assert again.config == model.config
    x = data[0][:20]
    np.testing.assert_array_equal(encode_expressions(again, x), encode_expressions(model, x))
    assert json.loads((tmp_path / "embed.json").read_text())["note"] == "test"


def test_rate_term_lowers_estimated_and_real_bits(data):
    pose = data[1]
    bits = {}
    for lam in (0.0, 1.0):
        _model, code, tables, cfg = _train(data, lam, iters=120)
        est = cfg.log[-1]["bits"]
        real = len(encode_stream(tables, FP, code[:200], pose[:200], 25.0, step_index=0)) * 8 / 200
        bits[lam] = (est, real)
    assert bits[1.0][0] < 0.9 * bits[0.0][0], bits
    assert bits[1.0][1] < bits[0.0][1], bits


def test_estimate_bits_shapes():
    code = torch.zeros(4, 3, requires_grad=True)
    b = estimate_bits(code, np.ones(3), 0.5)
    assert b.shape == (4,)
    b.sum().backward()
    assert code.grad is not None


# -- CLI ---------------------------------------------------------------------------------------------------
def _dataset(tmp_path, data):
    from safetensors.numpy import save_file

    expr, pose, (mean, basis) = data
    d = tmp_path / "ds"
    d.mkdir()
    n = len(expr)
    np.savez(d / "features.npz", expression=expr, pose=pose, valid=np.ones(n, bool))
    save_file(
        {"mean": mean.astype(np.float32), "basis": basis.astype(np.float32)},
        str(d / "face_model.safetensors"),
    )
    man = {"format": "nerfvc-dataset", "complete": True, "fps": 25.0, "camera": CAMERA}
    man["split"] = {"train": [0, 200], "test": [200, n]}
    (d / "manifest.json").write_text(json.dumps(man))
    return d


def test_cli_embed_train_encode_decode_and_refusal(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setattr(nerfvc.cli, "COMMAND_MODULES", ["nerfvc.pipeline.commands", "nerfvc.embed.commands"])
    main = nerfvc.cli.main
    ds = _dataset(tmp_path, data)
    m = tmp_path / "model"
    assert main(["embed-train", str(ds), "-o", str(m), "--code-dim", str(C), "--minutes", "0.01"]) == 0
    for f in ("embed.safetensors", "embed.json", "codec.json", "face_model.safetensors", "model.json"):
        assert (m / f).exists(), f
    manifest = json.loads((m / "model.json").read_text())
    assert "embed.safetensors" in manifest["files"]
    s = tmp_path / "s.nvc"
    assert main(["encode", "--features", str(ds / "features.npz"), "--model", str(m), "-o", str(s)]) == 0
    out = tmp_path / "out.npz"
    assert main(["decode", str(s), "--model", str(m), "-o", str(out)]) == 0
    with np.load(out) as z:
        assert z["expression"].shape == (len(data[0]), E) and z["code"].shape == (len(data[0]), C)
        emb = load_embedding(m)
        np.testing.assert_allclose(z["expression"], decode_codes(emb, z["code"]), atol=1e-7)
        code = encode_expressions(emb, data[0])
        from nerfvc.codec import CodecTables, StreamHeader
        from nerfvc.pipeline.commands import FILE_FRAMES_PER_PACKET

        keyint = StreamHeader.from_bytes(s.read_bytes()).keyframe_interval
        ref, _ = reference_stream(CodecTables.load(m), code, data[1], 0, keyint, FILE_FRAMES_PER_PACKET)
        np.testing.assert_allclose(z["code"], ref, rtol=0, atol=1e-6)
    # codec-fit on a model with an embedding fits the tables on its codes (same tables as embed-train).
    before = (m / "codec.json").read_text()
    fit = ["codec-fit", str(ds / "features.npz"), "-o", str(m), "--train-fraction", str(200 / 240)]
    assert main(fit) == 0
    assert (m / "codec.json").read_text() == before
    # A model without the embedding (raw codec tables, same face model) refuses the stream.
    raw = tmp_path / "raw"
    assert main(["codec-fit", str(ds / "features.npz"), "-o", str(raw), "--face-model", str(ds)]) == 0
    from nerfvc.modeldir import finalize_model_dir

    finalize_model_dir(raw)
    capsys.readouterr()
    assert main(["decode", str(s), "--model", str(raw), "-o", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "model" in err.lower() and not (tmp_path / "x.npz").exists()


# -- stage 2 -----------------------------------------------------------------------------------------------
def test_finetune_through_renderer_updates_the_encoder(tmp_path):
    from safetensors.numpy import load_file, save_file

    from nerfvc.embed.finetune import FinetuneConfig, finetune_through_renderer
    from nerfvc.field.encodings import HashGridConfig
    from nerfvc.field.fields import HeadFieldConfig
    from nerfvc.render.model import ModelConfig, PortraitNeRF
    from nerfvc.train.export import write_model_dir
    from nerfvc.train.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "ds", num_frames=12, size=24)
    fm = load_file(str(ds / "face_model.safetensors"))
    rng = np.random.default_rng(2)
    mean, basis = rng.normal(size=(30, 3)) * 0.03, np.linalg.qr(rng.normal(size=(90, 79)))[0] * 0.1
    fm.update({"mean": mean.astype(np.float32), "basis": basis.astype(np.float32)})
    save_file(fm, str(ds / "face_model.safetensors"))
    fine = HeadFieldConfig(grid=HashGridConfig(levels=4, features=2, log2_table=10, base_res=4, max_res=32))
    nerf = PortraitNeRF(ModelConfig(fine=fine, n_coarse=8, n_fine=8, occupancy_res=16))
    m = tmp_path / "model"
    fp0 = write_model_dir(m, nerf, ds)
    cfg = FinetuneConfig(max_iters=3, batch_rays=64, geo_weight=1.0, lr=1e-2)
    info = finetune_through_renderer(m, ds, cfg, size=24)
    assert info["iterations"] == 3 and info["fingerprint"] != fp0
    emb = load_embedding(m)
    assert emb.config.code_dim == 30
    assert not torch.equal(emb.token_out.weight, torch.zeros_like(emb.token_out.weight))  # it learned
    from nerfvc.codec import CodecTables

    assert CodecTables.load(m).code_dim == 30
