"""A person whose torso band is measured by halves (``nerfvc.face.torso``, 4 values after the expression):
trained, coded, decoded and drawn end to end, the MLPs' shift input kept to the training range."""

from __future__ import annotations

import numpy as np
import torch

from nerfvc.cli import main
from nerfvc.features import load_features, save_features
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline
from nerfvc.render.renderer import load_nerf
from nerfvc.train.synthetic import make_synthetic_dataset


def test_a_four_value_torso_trains_codes_decodes_and_renders(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "ds", num_frames=24, size=32, torso_motion=True)
    feats = load_features(ds / "features.npz")
    turn = (0.004 * np.sin(np.arange(24) / 3.0))[:, None] * np.array([1.0, -0.5])  # (24,2) the body turning
    feats["torso"] = np.concatenate([feats["torso"], turn], 1).astype(np.float32)  # (24,4)
    save_features(ds / "features.npz", **feats)
    model = tmp_path / "model"
    assert main(["train", str(ds), "-o", str(model), "--iters", "2", "--eval-frames", "1"]) == 0
    nerf, _, _ = load_nerf(model)
    assert nerf.cfg.torso_dims == 4 and nerf.cfg.torso.shift_inputs == 4
    train_turn = torch.from_numpy(turn[: len(turn) * 4 // 5])
    assert torch.allclose(nerf.torso.shift_hi[2:], torch.quantile(train_turn.float(), 0.99, dim=0), atol=1e-6)

    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    assert sender.torso_dims == 4
    clip = sender.read_features(ds / "features.npz")
    assert clip.features.shape == (24, 83)
    np.testing.assert_array_equal(clip.features[:, 79:], feats["torso"])
    decoded = receiver.decode_stream(sender.encode_stream(clip.features, clip.pose, 25.0))
    assert decoded.expression.shape == (24, 83)
    # the turn survives the codec to within its quantisation (steps from its own jitter)
    assert np.abs(decoded.expression[:, 81:] - turn).max() < 0.5 * np.abs(turn).max()
    frame = receiver.render(decoded.expression[5], decoded.pose[5], 32, 32)
    assert frame.shape == (32, 32, 3) and frame.std() > 0
