"""Fine-tuning embedding: a causal attention encoder that compresses the expression before coding."""

from nerfvc.embed.encoder import EmbedConfig, ExpressionEmbedding, causal_windows

__all__ = ["EmbedConfig", "ExpressionEmbedding", "causal_windows"]
