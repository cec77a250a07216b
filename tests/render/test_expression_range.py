"""The expression range a model renders: held-out expressions are clamped into the training frames' central
range per dimension before rendering (``PortraitNeRF.within_training_range``), at render time only."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nerfvc.errors import ModelMismatchError
from nerfvc.render.model import EXPRESSION_RANGE_QUANTILE, ModelConfig, PortraitNeRF
from nerfvc.render.renderer import Renderer, load_nerf


def test_the_range_is_the_training_quantiles_and_only_the_expression_is_clamped():
    model = PortraitNeRF(ModelConfig(expression_dim=3, torso_dims=2))
    inputs = torch.randn(2000, 5) * torch.tensor([0.02, 0.005, 0.0004, 1.0, 1.0])
    model.set_normalisation(inputs, torch.randn(2000, 12))
    q = np.quantile(inputs[:, :3].numpy(), [EXPRESSION_RANGE_QUANTILE, 1 - EXPRESSION_RANGE_QUANTILE], axis=0)
    np.testing.assert_allclose(model.expr_lo.numpy(), q[0], rtol=1e-5)
    np.testing.assert_allclose(model.expr_hi.numpy(), q[1], rtol=1e-5)
    far = torch.tensor([[1.0, -1.0, 0.0001, 7.0, -7.0]])  # (1, E+T): two dims far out, one inside
    held = model.within_training_range(far)
    assert torch.equal(held[0, 3:], far[0, 3:])  # the torso shift is not an expression
    assert held[0, 0] == model.expr_hi[0] and held[0, 1] == model.expr_lo[1] and held[0, 2] == far[0, 2]
    inside = inputs[(inputs[:, :3] > model.expr_lo).all(1) & (inputs[:, :3] < model.expr_hi).all(1)]
    assert len(inside) > 1800 and torch.equal(model.within_training_range(inside), inside)


def test_the_renderer_draws_an_out_of_range_expression_as_the_clamped_one(tiny_model):
    _, model_dir = tiny_model
    r = Renderer.from_model_dir(model_dir)
    m = r.model
    assert torch.isfinite(m.expr_lo).all() and (m.expr_lo <= m.expr_hi).all()  # set by training
    pose = m.pose_mean.numpy()
    far = (m.expr_hi + 40 * (m.expr_hi - m.expr_lo + 1e-3)).numpy()  # (E,) far past every dimension
    tail = np.zeros(m.cfg.torso_dims, np.float32)
    far_input, held = np.concatenate([far, tail]), np.concatenate([m.expr_hi.numpy(), tail])
    assert np.array_equal(r.render(far_input, pose, 32, 32), r.render(held, pose, 32, 32))
    r.expression_range = False  # the model itself does respond to the far expression
    assert not torch.allclose(r.render_float(far_input, pose, 32, 32), r.render_float(held, pose, 32, 32))


def test_a_model_saved_before_the_range_loads_without_it_and_other_missing_state_fails(tiny_model, tmp_path):
    _, model_dir = tiny_model
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    state = load_file(str(old / "nerf.safetensors"))
    save_file(
        {k: v for k, v in state.items() if k not in ("expr_lo", "expr_hi")}, str(old / "nerf.safetensors")
    )
    model, _, _ = load_nerf(old, verify=False)
    assert torch.isinf(model.expr_lo).all() and torch.isinf(model.expr_hi).all()  # nothing clamped
    save_file({k: v for k, v in state.items() if k != "expr_mean"}, str(old / "nerf.safetensors"))
    with pytest.raises(ModelMismatchError, match="missing expr_mean"):
        load_nerf(old, verify=False)


def test_the_torso_mlps_take_the_shift_clamped_into_its_training_range_and_the_lookup_takes_it_as_it_is():
    cfg = ModelConfig(expression_dim=3, torso_dims=4)
    cfg.torso.shift_inputs = 4
    model = PortraitNeRF(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.torso.parameters():
            p.normal_(0, 0.5)
    inputs = torch.cat([torch.randn(2000, 3) * 0.02, torch.randn(2000, 4) * 0.005], 1)
    model.set_normalisation(inputs, torch.randn(2000, 12))
    q = np.quantile(inputs[:, 3:].numpy(), [EXPRESSION_RANGE_QUANTILE, 1 - EXPRESSION_RANGE_QUANTILE], axis=0)
    np.testing.assert_allclose(model.torso.shift_lo.numpy(), q[0], rtol=1e-5)
    np.testing.assert_allclose(model.torso.shift_hi.numpy(), q[1], rtol=1e-5)
    uv, pose, cons = torch.rand(500, 2), torch.randn(1, 12), torch.randn(1, cfg.consistency_dim)
    glitch = torch.tensor([[0.0, 0.0, 0.5, 0.0]])  # one half of the band locked onto a wrong peak
    at_bound = torch.cat([glitch[:, :2], model.torso.shift_hi[None, 2:3], torch.zeros(1, 1)], 1)
    with torch.no_grad():
        a, b = model.torso(uv, pose, cons, glitch), model.torso(uv, pose, cons, at_bound)
        torch.testing.assert_close(a, b)  # the MLPs saw the bound
        moved = model.torso(uv, pose, cons, glitch + torch.tensor([[0.05, 0.0, 0.0, 0.0]]))
    assert (moved[0] - a[0]).abs().max() > 1e-3  # a shift past the range still moves the lookup
