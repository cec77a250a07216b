"""What both ends of a call share from a MODEL directory: codec tables, fingerprint, the optional expression
embedding (with the one place each direction of it is applied) and the face model's eyes (a wink kept)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nerfvc.codec.tables import CodecTables, load_model_tables
from nerfvc.errors import ModelMismatchError
from nerfvc.face.eyes import EyeApertures, load_eyes
from nerfvc.modeldir import model_torso_dims

if TYPE_CHECKING:
    from nerfvc.embed.encoder import ExpressionEmbedding


@dataclass
class ModelCodec:
    """A MODEL's codec tables and fingerprint, and its expression embedding when it has one (the tables then
    code the embedding's code, not the NeRF's expression); without one, the face model's eyes, with which
    the encoder keeps a wink (:func:`nerfvc.codec.wink.keep_wink`)."""

    tables: CodecTables
    fingerprint: str
    embedding: ExpressionEmbedding | None = None
    eyes: EyeApertures | None = None

    @classmethod
    def from_model_dir(cls, model: str | Path) -> ModelCodec:
        """Load and verify (against ``model.json``) the tables, fingerprint and embedding of ``model``."""
        from nerfvc.embed.train import load_model_embedding  # torch: imported only when a pipeline is built

        tables, fingerprint = load_model_tables(model)
        embedding = load_model_embedding(model)
        if embedding is not None and model_torso_dims(model):
            raise ModelMismatchError(
                f"{model}: its expression embedding does not code the torso shift the NeRF takes "
                "(train the embedding for a model without torso motion)"
            )
        eyes = load_eyes(model) if embedding is None else None
        if eyes is not None and eyes.expression_dim > tables.code_dim:
            raise ModelMismatchError(
                f"{model}: the face model has {eyes.expression_dim} expression dims, the codec codes "
                f"{tables.code_dim} values"
            )
        return cls(tables, fingerprint, embedding, eyes)

    def to_code(self, features: np.ndarray) -> np.ndarray:
        """A clip's model features ``(N, D)`` → the codes the codec sends ``(N, C)``: the embedding's code
        of each frame's causal window, or the features themselves without an embedding."""
        if self.embedding is None:
            return features
        from nerfvc.embed.train import encode_expressions

        return encode_expressions(self.embedding, features)

    def causal_coder(self) -> Callable[[np.ndarray], np.ndarray]:
        """A per-frame :meth:`to_code` for a live sender: features ``(D,)`` → code ``(C,)`` float32, keeping
        the embedding's window of past frames (the same codes as :meth:`to_code` of the whole clip)."""
        if self.embedding is None:
            return lambda features: features
        import torch

        from nerfvc.embed.encoder import CausalEncoderState

        state = CausalEncoderState(self.embedding)

        def code(features: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.asarray(features, np.float32).reshape(-1))
            return state.push(x).numpy().astype(np.float32)

        return code

    def to_expression(self, code: np.ndarray) -> np.ndarray:
        """Decoded codes ``(N, C)`` → the NeRF's input ``(N, D)``: the embedding's expansion, or the codes
        themselves without an embedding."""
        if self.embedding is None:
            return code
        from nerfvc.embed.train import decode_codes

        return decode_codes(self.embedding, code)
