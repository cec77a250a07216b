"""One frame's head field (:class:`FrameHead`: the frame's codes folded into first-layer biases) equals the
:class:`HeadField` it specialises, density and colour, with the expression code in the colour or density MLP
or not."""

import pytest
import torch

from nerfvc.field.encodings import HashGridConfig
from nerfvc.field.fields import HeadField, HeadFieldConfig, field_settings
from nerfvc.field.frame import FrameHead


@pytest.mark.parametrize("color_code,density_code", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("view_dir", [True, False])
@pytest.mark.parametrize("hidden", [32, 64])
def test_frame_head_equals_the_head_field(color_code, density_code, view_dir, hidden):
    torch.manual_seed(0)
    grid = HashGridConfig(levels=4, features=2, log2_table=12, base_res=4, max_res=32)
    cfg = HeadFieldConfig(
        grid=grid,
        color_code=color_code,
        density_code=density_code,
        use_view_dir=view_dir,
        blend_res=7,
        hidden=hidden,
    )
    head = HeadField(cfg, consistency_dim=4)
    with torch.no_grad():
        head.grid.table.normal_(0, 1.0)
        head.blend.normal_(0, 0.5)
    n_color_in = cfg.geo_dim + (cfg.code_dim if color_code else 0) + 4 + (3 if view_dir else 0)
    assert head.color_net[0].in_features == n_color_in
    n_sigma_in = grid.levels * grid.features + head.blend_dim + (cfg.code_dim if density_code else 0)
    assert head.sigma_net[0].in_features == n_sigma_in
    code, cons = torch.randn(1, cfg.code_dim), torch.randn(1, 4)
    x = torch.rand(300, 3)
    view = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    with torch.no_grad(), field_settings(torch.float32, "torch"):
        sigma, rgb = head(x, code, view, cons)
        frame = FrameHead(head, code, cons)
        f_sigma, geo = frame.density(x)
        f_rgb = frame.color(geo, frame.view_bias(view))
        other_sigma, other = head(x, code + 1.0, view, cons)  # another expression
    torch.testing.assert_close(f_sigma, sigma, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f_rgb, rgb, rtol=1e-4, atol=1e-5)
    assert (other - rgb).abs().max() > 1e-3  # either way, the expression reaches the colour
    assert (other_sigma - sigma).abs().max() > 1e-3  # and the density (by the code or the blend shapes)
