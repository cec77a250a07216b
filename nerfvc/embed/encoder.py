"""Causal attention encoder (sender) and linear expansion (receiver) for the expression code.

The sender maps a short causal window of expression vectors (the current frame and ``window - 1`` past
frames, never future ones) to a ``code_dim`` code that the codec transmits. The receiver expands the code
back to the expression space the NeRF is conditioned on. Both start as the identity on the first
``code_dim`` PCA coefficients (the PCA basis is ordered by variance, so truncation is the best linear
start) and are then fine-tuned end to end through the renderer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class EmbedConfig:
    """Shape of the embedding."""

    in_dim: int = 79  # expression dimensions (PCA coefficients)
    code_dim: int = 30  # transmitted code dimensions
    window: int = 4  # causal window in frames (current included)
    d_model: int = 32
    heads: int = 4
    layers: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def causal_windows(expression: torch.Tensor, window: int) -> torch.Tensor:
    """Stack causal windows: ``(N, E)`` → ``(N, window, E)``, row ``i`` = frames ``i-window+1 .. i``.

    Frames before the first are padded with the first frame, so frame 0 sees only itself.
    """
    pad = expression[:1].expand(window - 1, -1)
    padded = torch.cat([pad, expression], dim=0)  # (N + window - 1, E)
    return padded.unfold(0, window, 1).permute(0, 2, 1)  # (N, window, E)


class ExpressionEmbedding(nn.Module):
    """Sender-side encoder ``(B, window, E) → (B, C)`` and receiver-side decoder ``(B, C) → (B, E)``."""

    scale: torch.Tensor  # (E,) a buffer (see __init__)

    def __init__(self, config: EmbedConfig, scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = c = config
        # Per-dimension expression scale (std over training frames) so tokens see unit-variance inputs.
        self.register_buffer("scale", torch.ones(c.in_dim) if scale is None else scale.float().clone())
        self.skip = nn.Linear(c.in_dim, c.code_dim, bias=False)  # truncation at init
        self.token_in = nn.Linear(c.in_dim, c.d_model)
        self.position = nn.Parameter(torch.zeros(c.window, c.d_model))
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.heads, dim_feedforward=2 * c.d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.attention = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.token_out = nn.Linear(c.d_model, c.code_dim)
        self.expand = nn.Linear(c.code_dim, c.in_dim, bias=False)  # receiver: code → expression
        with torch.no_grad():
            eye = torch.eye(c.code_dim, c.in_dim)
            self.skip.weight.copy_(eye)
            self.expand.weight.copy_(eye.T)
            self.token_out.weight.zero_()
            self.token_out.bias.zero_()

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """Causal windows ``(B, window, E)`` (oldest first) → codes ``(B, C)`` in expression units."""
        x = windows / self.scale
        tokens = self.token_in(x) + self.position  # (B, W, d)
        refined = self.attention(tokens)[:, -1]  # (B, d): the current frame's token after attention
        return (self.skip(x[:, -1]) + self.token_out(refined)) * self.scale[: self.config.code_dim]

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, C)`` → expression ``(B, E)`` for the NeRF."""
        return self.expand(code / self.scale[: self.config.code_dim]) * self.scale

    def encode_sequence(self, expression: torch.Tensor) -> torch.Tensor:
        """A whole sequence ``(N, E)`` → codes ``(N, C)``, each from its own causal window."""
        return self.encode(causal_windows(expression, self.config.window))


class CausalEncoderState:
    """Streaming sender: feed one expression per frame, get its code, keeping the last ``window`` frames."""

    def __init__(self, model: ExpressionEmbedding) -> None:
        self.model = model.eval()
        self.history: list[torch.Tensor] = []

    @torch.no_grad()
    def push(self, expression: torch.Tensor) -> torch.Tensor:
        """One frame's expression ``(E,)`` → its code ``(C,)``."""
        w = self.model.config.window
        self.history = ([*self.history, expression.float()])[-w:]
        frames = [self.history[0]] * (w - len(self.history)) + self.history
        return self.model.encode(torch.stack(frames)[None])[0]
