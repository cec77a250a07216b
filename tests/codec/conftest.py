"""Shared fixtures: small synthetic features, fitted tables, a finalized MODEL directory."""

from __future__ import annotations

import numpy as np
import pytest

import nerfvc.cli
from nerfvc.codec.fit import fit_codec
from nerfvc.codec.synthetic import synthetic_features
from nerfvc.codec.tables import CODEC_FILE, CodecTables
from nerfvc.modeldir import finalize_model_dir

FP = "0123456789abcdef"


def assert_decoded(actual: np.ndarray, expected: np.ndarray) -> None:
    """Decoder output against :func:`~nerfvc.codec.coder.reference_stream` (computed for the whole stream at
    once, so the last float bit may differ; a wrong decode is off by a share of a quantization step)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="session")
def feats() -> tuple[np.ndarray, np.ndarray]:
    """300 frames of 10-d AR(1) code + pose."""
    return synthetic_features(300, 10, seed=1)


@pytest.fixture(scope="session")
def tables(feats) -> CodecTables:
    code, pose = feats
    return fit_codec(code[:240], pose[:240])


@pytest.fixture
def model_dir(tmp_path, tables):
    """A finalized MODEL directory with codec.json and a stand-in weights file → (path, fingerprint)."""
    d = tmp_path / "model"
    d.mkdir()
    tables.save(d / CODEC_FILE)
    (d / "nerf.safetensors").write_bytes(b"stand-in")
    return d, finalize_model_dir(d)


@pytest.fixture
def cli(monkeypatch):
    """``nerfvc.cli.main`` with only the codec commands (encode, decode, codec-fit)."""
    monkeypatch.setattr(nerfvc.cli, "COMMAND_MODULES", ["nerfvc.pipeline.commands"])
    return nerfvc.cli.main
