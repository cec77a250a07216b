"""Hash grid: the C++ kernel and the pure-torch fallback compute the same values and gradients."""

import pytest
import torch

from nerfvc.field.encodings import HashGrid, HashGridConfig, PlaneGrid, PlaneGridConfig, load_cpp_extension
from nerfvc.field.fields import HeadField, HeadFieldConfig

needs_cpp = pytest.mark.skipif(
    load_cpp_extension() is None, reason="no C++ compiler for the hash-grid kernel"
)


@needs_cpp
@pytest.mark.parametrize("log2_table", [10, 14])  # 10: mostly hashed levels; 14: dense coarse levels too
def test_cpp_matches_torch_values_and_gradients(log2_table):
    torch.manual_seed(0)
    cfg = HashGridConfig(levels=6, features=2, log2_table=log2_table, base_res=4, max_res=128, init_scale=1.0)
    grid = HashGrid(cfg)
    ref = HashGrid(HashGridConfig(**{**cfg.__dict__, "implementation": "torch"}))
    ref.load_state_dict(grid.state_dict())
    x = torch.rand(3000, 3)
    x[:10] = torch.tensor([0.0, 1.0, 0.5])  # borders
    assert grid.uses_cpp(x) and not ref.uses_cpp(x)
    a, b = grid(x), ref(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    w = torch.randn_like(a)
    (ga,) = torch.autograd.grad((a * w).sum(), grid.table)
    (gb,) = torch.autograd.grad((b * w).sum(), ref.table)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


def test_hash_grid_interpolates_continuously_and_fits():
    torch.manual_seed(0)
    grid = HashGrid(
        HashGridConfig(levels=4, features=2, log2_table=12, base_res=4, max_res=32, init_scale=1.0)
    )
    x = torch.rand(100, 3) * 0.9
    near = grid(x + 1e-4) - grid(x)
    assert near.abs().max() < 0.05  # continuous (trilinear), not piecewise constant
    target = torch.sin(6 * torch.rand(256, 3)).sum(-1, keepdim=True)
    pts = torch.rand(256, 3)
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam([*grid.parameters(), *head.parameters()], lr=3e-2)
    for _ in range(150):
        loss = ((head(grid(pts)) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * target.var().item()


def test_plane_grid_shapes_and_head_field_outputs():
    planes = PlaneGrid(PlaneGridConfig(resolutions=[8, 16], features=3))
    assert planes(torch.rand(7, 2)).shape == (7, 6)
    field = HeadField(HeadFieldConfig(expression_dim=5, grid=HashGridConfig(levels=4, log2_table=10)), 3)
    code = field.expression_code(torch.randn(9, 5))
    sigma, rgb = field(torch.rand(9, 3), code, torch.randn(9, 3), torch.zeros(9, 3))
    assert sigma.shape == (9,) and rgb.shape == (9, 3)
    assert (sigma >= 0).all() and ((rgb >= 0) & (rgb <= 1)).all()


def test_bad_hash_config_is_refused():
    with pytest.raises(ValueError, match="features"):
        HashGrid(HashGridConfig(features=16))
