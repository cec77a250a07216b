"""Expression blend shapes of the head field (``HeadFieldConfig.blend_res``): a new model starts as a plain
one, one frame's collapsed level equals the per-point sum, and the frame renderer's extra hash level is the
field's own blend-shape term."""

import pytest
import torch

from nerfvc.field.blend import blend_lookup, blend_lookup_torch, grid_roughness, grid_roughness_torch
from nerfvc.field.encodings import HashGridConfig
from nerfvc.field.fields import HeadField, HeadFieldConfig, field_settings, linears, trunc_exp
from nerfvc.field.frame import FrameHead
from nerfvc.field.fused import fused_density, fused_density_available

SMALL_GRID = HashGridConfig(levels=4, features=2, log2_table=12, base_res=4, max_res=32)


def _head(blend_res: int, implementation: str = "auto", seed: int = 0) -> HeadField:
    torch.manual_seed(seed)
    grid = HashGridConfig(**{**SMALL_GRID.__dict__, "implementation": implementation})
    head = HeadField(HeadFieldConfig(grid=grid, blend_res=blend_res), consistency_dim=4)
    with torch.no_grad():
        head.grid.table.uniform_(-0.5, 0.5)
        if blend_res:
            head.blend.uniform_(-0.5, 0.5)
    return head


def test_zero_blend_shapes_start_as_the_plain_head():
    plain, blended = _head(0), _head(7)
    with torch.no_grad():
        blended.blend.zero_()
        blended.grid.table.copy_(plain.grid.table)
        for a, b in zip(linears(plain.sigma_net), linears(blended.sigma_net)):
            g = plain.cfg.grid.out_dim
            w = (
                a.weight
                if a.weight.shape == b.weight.shape
                else torch.cat([a.weight[:, :g], b.weight[:, g : g + 2], a.weight[:, g:]], 1)
            )
            b.weight.copy_(w)
            b.bias.copy_(a.bias)
    x, code = torch.rand(200, 3), torch.randn(200, plain.cfg.code_dim)
    with field_settings(torch.float32, "torch"):
        for p, q in zip(plain.density(x, code), blended.density(x, code)):
            torch.testing.assert_close(p, q)


@pytest.mark.parametrize("implementation", ["torch", "auto"])
def test_one_frame_collapsed_level_is_the_per_point_sum(implementation):
    head = _head(7, implementation)
    x, code = torch.rand(300, 3), torch.randn(1, head.cfg.code_dim)
    collapsed = head.grid.lookup(x, head.blend_table(code)[None], torch.tensor([7]))
    per_point = head.blend_features(x, code.expand(300, -1))
    assert collapsed.shape == (300, 2) and collapsed.abs().mean() > 0.05
    torch.testing.assert_close(collapsed, per_point, rtol=1e-4, atol=1e-5)
    # the effect of the expression depends on position: two codes differ by different amounts at two points
    other = head.blend_features(x, -code)
    assert (head.blend_features(x, code) - other)[:, 0].std() > 0.1


@pytest.mark.skipif(not fused_density_available(), reason="no C++ compiler for the blend kernel")
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c,n_feat", [(5, 1), (5, 2), (5, 4), (8, 2), (16, 2)])  # C·F 16 and 32: unrolled
def test_blend_kernel_matches_the_reference(per_row, threads, c, n_feat):
    """Values and gradients (table and codes) of the C++ kernel against the hash-grid reference, with points
    on the faces of the cube and outside it (clamped)."""
    g = torch.Generator().manual_seed(threads + 3 * n_feat + c)
    n, r = 2500, 6
    x = torch.rand(n, 3, generator=g) * 1.2 - 0.1
    x[:6] = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0, 1, 1], [0.5, 0.5, 1], [1 / 6, 2 / 6, 1.0]])
    blend = torch.randn((r + 1) ** 3, c, n_feat, generator=g, requires_grad=True)
    code = torch.randn(n if per_row else 1, c, generator=g, requires_grad=True)
    grad = torch.randn(n, n_feat, generator=g)
    results = []
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for lookup in (blend_lookup, blend_lookup_torch):
            blend.grad = code.grad = None
            out = lookup(x, blend, code, r)
            out.backward(grad)
            results.append((out.detach(), blend.grad.clone(), code.grad.clone()))
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert results[0][1].abs().sum() > 0 and results[0][2].abs().sum() > 0


def test_blend_shapes_learn_from_the_density():
    head = _head(7)
    x, code = torch.rand(100, 3), torch.randn(100, head.cfg.code_dim)
    with field_settings(torch.float32, "torch"):
        sigma, geo = head.density(x, code)
        (sigma.sum() + geo.sum()).backward()
    assert head.blend.grad is not None and head.blend.grad.abs().sum() > 0


def test_frame_head_reads_the_blend_shapes_as_one_more_hash_level():
    head = _head(7)
    code, cons = torch.randn(1, head.cfg.code_dim), torch.randn(1, 4)
    x = torch.rand(500, 3)
    with torch.no_grad(), field_settings(torch.float32, "torch"):
        sigma, geo = head.density(x, code)
        frame = FrameHead(head, code, cons)
        assert frame.table.shape[0] == head.cfg.grid.levels + 1
        f_sigma, f_geo = frame.density(x)
    torch.testing.assert_close(f_sigma, sigma, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f_geo, geo, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not fused_density_available(), reason="no C++ compiler for the fused kernel")
def test_the_fused_frame_head_includes_the_blend_level():
    head = _head(7)
    code, cons = torch.randn(1, head.cfg.code_dim), torch.randn(1, 4)
    x = torch.rand(500, 3)
    with torch.no_grad(), field_settings(torch.float32, "fused"):
        sigma, _ = head.density(x, code)
        frame = FrameHead(head, code, cons, half_table=True)
        assert frame.fused is not None and frame.half_table is not None
        assert frame.half_table.shape == (head.cfg.grid.levels + 1, 2**SMALL_GRID.log2_table)
        h = fused_density(x, *frame.fused)
    torch.testing.assert_close(trunc_exp(h[:, 0] - 1.0), sigma, rtol=1e-4, atol=1e-5)


def test_a_blend_grid_larger_than_a_hash_level_is_refused():
    with pytest.raises(ValueError, match="blend_res 16"):
        HeadField(HeadFieldConfig(grid=SMALL_GRID, blend_res=16), consistency_dim=0)  # 17³ > 2¹²


def test_frames_alive_at_once_keep_their_own_blend_level():
    """The extended tables are reused across frames, but never shared by two live frame heads."""
    head = _head(7)
    cons = torch.zeros(1, 4)
    x = torch.rand(300, 3)
    with torch.no_grad(), field_settings(torch.float32, "torch"):
        codes = [torch.randn(1, head.cfg.code_dim) for _ in range(3)]
        want = [head.density(x, c)[0] for c in codes]
        a, b = FrameHead(head, codes[0], cons), FrameHead(head, codes[1], cons)
        assert a.table is not b.table
        torch.testing.assert_close(a.density(x)[0], want[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.density(x)[0], want[1], rtol=1e-4, atol=1e-5)
        kept = a.table
        del a
        c = FrameHead(head, codes[2], cons)
        assert c.table is kept  # a freed frame's tables are lent again
        torch.testing.assert_close(c.density(x)[0], want[2], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.density(x)[0], want[1], rtol=1e-4, atol=1e-5)


def test_a_changed_hash_table_reaches_the_next_frame_head():
    head = _head(7)
    code, cons, x = torch.randn(1, head.cfg.code_dim), torch.zeros(1, 4), torch.rand(300, 3)
    with torch.no_grad(), field_settings(torch.float32, "torch"):
        FrameHead(head, code, cons)  # lends, fills and returns a copy of the table
        head.grid.table.add_(0.25)  # a training step
        torch.testing.assert_close(
            FrameHead(head, code, cons).density(x)[0], head.density(x, code)[0], rtol=1e-4, atol=1e-5
        )


def test_a_head_built_under_inference_mode_is_copied_every_frame():
    """Inference tensors keep no version counter: their copies are never reused, so a change still shows."""
    with torch.inference_mode():
        head = _head(7)
        code, cons, x = torch.randn(1, head.cfg.code_dim), torch.zeros(1, 4), torch.rand(300, 3)
        with field_settings(torch.float32, "torch"):
            FrameHead(head, code, cons)
            head.grid.table.add_(0.25)
            torch.testing.assert_close(
                FrameHead(head, code, cons).density(x)[0], head.density(x, code)[0], rtol=1e-4, atol=1e-5
            )


def test_grid_roughness_matches_its_autograd_reference_in_value_and_gradient():
    """The written-out gradient of the neighbour-difference penalty (``--blend-smoothness``) is autograd's,
    on a grid with a different size per axis (an axis mixed up would differ), scaled by an upstream weight."""
    torch.manual_seed(0)
    base = torch.randn(5, 6, 7, 3, dtype=torch.float64)
    grids = [base.clone().requires_grad_(True) for _ in range(2)]
    values = [fn(g) for fn, g in zip((grid_roughness, grid_roughness_torch), grids)]
    for v in values:
        (0.3 * v).backward()
    assert float(values[0]) == pytest.approx(float(values[1]), rel=1e-12)
    torch.testing.assert_close(grids[0].grad, grids[1].grad, rtol=1e-10, atol=1e-12)
    ramp = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 4, 4, 2).contiguous()
    assert float(grid_roughness(ramp)) == pytest.approx(1.0)  # steps of 1 along x, none along y and z
