"""Session fixtures shared by several test packages: tiny trained MODEL directories (seconds to build).

- ``tiny_model``: a NeRF with torso motion (features = expression (79) + torso shift (2)) and the codec
  tables ``nerfvc train`` fits;
- ``tiny_embed_model``: a NeRF without torso motion plus an expression embedding (``embed-train``, 79 → 8
  dims), whose codec tables code the embedding's code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

EMBED_CODE_DIM = 8


def _train(ds: Path, model: Path) -> None:
    from nerfvc.cli import main

    assert main(["train", str(ds), "-o", str(model), "--iters", "2", "--eval-frames", "1"]) == 0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(DATASET, MODEL): 24 synthetic 32×32 frames with torso motion and a NeRF trained for 2 steps."""
    from nerfvc.train.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_model")
    ds = make_synthetic_dataset(root / "ds", num_frames=24, size=32, torso_motion=True)
    _train(ds, root / "model")
    return ds, root / "model"


@pytest.fixture(scope="session")
def tiny_embed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(DATASET, MODEL): 30 synthetic 32×32 frames (every expression dim moving), a face model with an
    expression basis, a NeRF trained for 2 steps and an expression embedding trained for a few steps."""
    from safetensors.numpy import load_file, save_file

    from nerfvc.codec.synthetic import synthetic_features
    from nerfvc.datasetdir import FACE_MODEL_FILE, features_path
    from nerfvc.embed.train import embed_train_dir
    from nerfvc.features import load_features, save_features
    from nerfvc.train.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_embed_model")
    ds = make_synthetic_dataset(root / "ds", num_frames=30, size=32)
    feats = load_features(features_path(ds))
    expr, _ = synthetic_features(30, 79, seed=5, jitter=0.03)
    feats["expression"] = (0.01 * expr).astype(np.float32)  # metres-scale PCA coefficients
    save_features(features_path(ds), **feats)
    face = load_file(str(ds / FACE_MODEL_FILE))
    rng = np.random.default_rng(2)
    face["mean"] = (rng.normal(size=(30, 3)) * 0.03).astype(np.float32)
    face["basis"] = np.linalg.qr(rng.normal(size=(90, 79)))[0].astype(np.float32)
    save_file(face, str(ds / FACE_MODEL_FILE))
    model = root / "model"
    _train(ds, model)
    embed_train_dir(ds, model, code_dim=EMBED_CODE_DIM, window=3, minutes=5.0, max_iters=20)  # 20 iterations
    return ds, model
