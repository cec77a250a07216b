"""The embedding encoder is causal, starts as PCA truncation, streams like it batches, and is fast."""

import torch

from nerfvc.embed import EmbedConfig, ExpressionEmbedding, causal_windows
from nerfvc.embed.encoder import CausalEncoderState


def _model(seed: int = 0, perturb: bool = True) -> ExpressionEmbedding:
    torch.manual_seed(seed)
    m = ExpressionEmbedding(EmbedConfig(in_dim=12, code_dim=5, window=3), scale=torch.rand(12) + 0.5)
    if perturb:  # move away from the identity initialisation so attention actually contributes
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def test_causal_windows_pad_with_first_frame():
    x = torch.arange(4.0)[:, None].expand(4, 2)
    w = causal_windows(x, 3)
    assert w.shape == (4, 3, 2)
    assert w[0, :, 0].tolist() == [0, 0, 0]
    assert w[3, :, 0].tolist() == [1, 2, 3]


def test_changing_a_future_frame_changes_no_past_code():
    m = _model()
    x = torch.randn(10, 12)
    y = x.clone()
    y[6] += 3.0
    a, b = m.encode_sequence(x), m.encode_sequence(y)
    assert torch.equal(a[:6], b[:6])
    assert not torch.allclose(a[6], b[6])  # the changed frame itself matters
    assert not torch.allclose(a[8], b[8])  # and so does it as past context


def test_initialisation_is_pca_truncation():
    m = _model(perturb=False)
    x = torch.randn(7, 12)
    code = m.encode_sequence(x)
    torch.testing.assert_close(code, x[:, :5])
    recon = m.decode(code)
    torch.testing.assert_close(recon[:, :5], x[:, :5])
    assert torch.count_nonzero(recon[:, 5:]) == 0


def test_streaming_matches_batch():
    m = _model()
    x = torch.randn(8, 12)
    state = CausalEncoderState(m)
    streamed = torch.stack([state.push(f) for f in x])
    torch.testing.assert_close(streamed, m.encode_sequence(x), rtol=1e-5, atol=1e-5)
