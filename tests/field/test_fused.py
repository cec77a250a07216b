"""Fused density kernel: values and gradients equal the pure-torch reference."""

import math

import pytest
import torch

from nerfvc.field.blend import blend_lookup
from nerfvc.field.fused import (
    FusedDensityFn,
    denormals_flushed,
    fused_density,
    fused_density_available,
    fused_density_reference,
)

pytestmark = pytest.mark.skipif(not fused_density_available(), reason="no C++ compiler for the fused kernel")

# name: (levels, features, log2 table, hidden, out); base resolution 4 so the 2^10 / 2^13 tables mix
# dense coarse levels with hashed fine ones
SHAPES = {
    "fine": (16, 2, 16, 32, 16),
    "fine_64": (16, 2, 15, 64, 16),  # the fine head before the twenty-third session
    "coarse": (8, 2, 13, 32, 8),
    "f1": (6, 1, 10, 32, 8),  # G = 6, H/O padded inside the kernel
    "f4": (5, 4, 10, 24, 5),
}


def _inputs(name: str, n: int, rows_b1: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    levels, feats, log2_t, hidden, out = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    growth = math.exp((math.log(128) - math.log(4)) / (levels - 1))
    res = torch.tensor([math.floor(4 * growth**i) for i in range(levels)], dtype=torch.int64)
    x = torch.rand(n, 3, generator=g)
    if n >= 40:  # points at 0 and 1, on cell borders (multiples of 1/4 and 1/8) and just outside [0,1]
        x[:8] = torch.tensor([0.0, 1.0, 0.5])
        x[8:16] = torch.tensor([0.25, 0.125, 1.0])
        x[16:24] = torch.tensor([0.0, 0.375, 0.75])
        x[24:32] = torch.tensor([-0.1, 1.2, 0.5])
    table = torch.randn(levels, 2**log2_t, feats, generator=g)
    w1 = torch.randn(levels * feats, hidden, generator=g) / math.sqrt(levels * feats)
    b1 = torch.randn(n if rows_b1 else 1, hidden, generator=g) * 0.3
    w2 = torch.randn(hidden, out, generator=g) / math.sqrt(hidden)
    b2 = torch.randn(out, generator=g)
    return x, table, res, w1, b1, w2, b2


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("rows_b1", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_matches_reference(name, rows_b1, threads):
    args = _inputs(name, 2500, rows_b1)  # 2500: 3 blocks of 16 tiles of 64 points, the last ones partial
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = fused_density(*args)
    finally:
        torch.set_num_threads(prev)
    ref = fused_density_reference(*args)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("name", ["fine", "coarse", "f1", "f4"])
@pytest.mark.parametrize("rows_b1", [False, True])
@pytest.mark.parametrize("n", [1, 77, 600])
def test_gradients_match_reference(name, rows_b1, n):
    x, *params = _inputs(name, n, rows_b1, seed=n)
    table, res, w1, b1, w2, b2 = params
    leaves = [t.requires_grad_() for t in (table, w1, b1, w2, b2)]
    grad_out = torch.randn(n, w2.shape[1], generator=torch.Generator().manual_seed(1))
    prev = torch.get_num_threads()
    torch.set_num_threads(2)  # per-thread partial sums and tables, reduced at the end
    try:
        out = FusedDensityFn.apply(x, table, res, w1, b1, w2, b2)
        got = torch.autograd.grad(out, leaves, grad_out)
    finally:
        torch.set_num_threads(prev)
    ref = fused_density_reference(x, table, res, w1, b1, w2, b2)
    want = torch.autograd.grad(ref, leaves, grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    for g, w, label in zip(got, want, ["table", "w1", "b1", "w2", "b2"]):
        assert g.shape == w.shape, label
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item(), msg=label)


def test_empty_input():
    x, table, res, w1, b1, w2, b2 = _inputs("coarse", 0, False)
    leaves = [t.requires_grad_() for t in (table, w1, b1, w2, b2)]
    out = FusedDensityFn.apply(x, table, res, w1, b1, w2, b2)
    assert out.shape == (0, 8)
    grads = torch.autograd.grad(out.sum(), leaves)
    assert all(g.shape == t.shape and not g.any() for g, t in zip(grads, leaves))


def test_bad_shapes_are_refused():
    x, table, res, w1, b1, w2, b2 = _inputs("coarse", 10, False)
    with pytest.raises(RuntimeError, match="b1"):
        fused_density(x, table, res, w1, b1.expand(3, -1).contiguous(), w2, b2)
    with pytest.raises(RuntimeError, match="w1"):
        fused_density(x, table, res, w1[1:].contiguous(), b1, w2, b2)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("blend_res,density_code,hidden", [(0, True, 64), (15, True, 64), (15, False, 32)])
def test_head_field_density_is_the_same_by_either_kernel(
    monkeypatch, per_row, blend_res, density_code, hidden
):
    """HeadField.density through the fused pass equals the C++ grid + float32 torch MLP, values and grads
    (with expression blend shapes too, and with the code reaching density through them alone)."""
    from nerfvc.field.fields import HeadField, HeadFieldConfig

    monkeypatch.setenv("NERFVC_PRECISION", "fp32")
    torch.manual_seed(0)
    cfg = HeadFieldConfig(blend_res=blend_res, density_code=density_code, hidden=hidden)
    head = HeadField(cfg, consistency_dim=8)
    head.grid.table.data.uniform_(-0.5, 0.5)
    if blend_res:
        head.blend.data.uniform_(-0.5, 0.5)
    x = torch.rand(300, 3)
    code = torch.randn(300 if per_row else 1, head.cfg.code_dim, requires_grad=True)
    out = {}
    for kernel in ("fused", "torch"):
        monkeypatch.setenv("NERFVC_KERNEL", kernel)
        head.zero_grad()
        code.grad = None
        sigma, geo = head.density(x, code)
        (sigma.sum() + geo.square().sum()).backward()
        grads = [p.grad.clone() for p in head.parameters() if p.grad is not None]
        assert len(grads) == 2 + len(list(head.sigma_net.parameters())) - (not blend_res)
        out[kernel] = (sigma.detach(), geo.detach(), code.grad.clone(), grads)
    for a, b in zip(out["fused"][:3], out["torch"][:3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(out["fused"][3], out["torch"][3]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    import os
    import time

    from nerfvc.field.cpp import _clear_stale_lock

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for name, age in (("stale_ext", 3600), ("busy_ext", 5)):
        d = tmp_path / name
        d.mkdir()
        (d / "lock").write_text("")
        os.utime(d / "lock", (time.time() - age, time.time() - age))
        _clear_stale_lock(name)
    assert not (tmp_path / "stale_ext" / "lock").exists()  # left by a killed build: torch would wait forever
    assert (tmp_path / "busy_ext" / "lock").exists()  # another process may be compiling right now


def test_denormals_are_flushed_on_every_thread_inside_the_block_and_kept_after():
    """torch's intra-op threads (a 2-thread product) and the kernels' OpenMP threads (a 2-thread blend
    lookup) read denormal inputs as zero inside the block, and as themselves after it."""
    tiny = 1e-39  # a float32 denormal
    x = torch.full((1 << 17,), tiny)
    points = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0))
    blend, code = torch.full((8**3, 1, 1), tiny), torch.ones(1, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with denormals_flushed() as ok:
            assert ok
            assert (x * 1.0 == 0).all()
            assert (blend_lookup(points, blend, code, 7) == 0).all()
        assert (x * 1.0 == tiny).all()
        assert (blend_lookup(points, blend, code, 7) != 0).all()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kernel", ["fused", "torch"])
def test_closed_hash_levels_neither_reach_the_density_nor_learn(monkeypatch, kernel):
    """With the level window at 8.5 of 16 levels, levels 9+ do not change sigma and get no gradient, level 8
    counts half, levels 0-7 fully; both kernels agree on it; the window removed, every level counts again."""
    from nerfvc.field.fields import HeadField, HeadFieldConfig

    monkeypatch.setenv("NERFVC_PRECISION", "fp32")
    monkeypatch.setenv("NERFVC_KERNEL", kernel)
    torch.manual_seed(0)
    head = HeadField(HeadFieldConfig(blend_res=15, density_code=False, hidden=32), consistency_dim=8)
    head.grid.table.data.uniform_(-0.5, 0.5)
    x, code = torch.rand(300, 3), torch.randn(1, head.cfg.code_dim)
    head.set_level_window(8.5)
    w = head.level_weights.view(16, 2)[:, 0]
    assert w[:8].eq(1).all() and w[9:].eq(0).all() and math.isclose(float(w[8]), 0.5, abs_tol=1e-6)
    sigma, geo = head.density(x, code)
    (sigma.sum() + geo.square().sum()).backward()
    grad = head.grid.table.grad
    assert grad[9:].abs().max() == 0 and grad[:8].abs().max() > 0 and grad[8].abs().max() > 0
    with torch.no_grad():
        head.grid.table[9:].uniform_(-0.5, 0.5)  # closed levels: nothing changes
        torch.testing.assert_close(head.density(x, code)[0], sigma.detach())
        head.set_level_window(None)
        assert head.level_weights is None
        assert not torch.allclose(head.density(x, code)[0], sigma.detach())
    monkeypatch.setenv("NERFVC_KERNEL", "torch" if kernel == "fused" else "fused")
    head.set_level_window(8.5)
    with torch.no_grad():
        other = head.density(x, code)[0]
        monkeypatch.setenv("NERFVC_KERNEL", kernel)
        torch.testing.assert_close(head.density(x, code)[0], other, rtol=1e-4, atol=1e-5)


def test_the_three_kernel_sources_build_as_one_extension_exporting_each_ones_functions():
    from nerfvc.field.cpp import KERNEL_FUNCTIONS, load_kernel

    loaded = {stem: load_kernel(stem) for stem in KERNEL_FUNCTIONS}
    assert len({id(m) for m in loaded.values()}) == 1 and None not in loaded.values()
    for stem, functions in KERNEL_FUNCTIONS.items():
        assert all(callable(getattr(loaded[stem], f, None)) for f in functions), stem
    with pytest.raises(ValueError, match="unknown kernel source"):
        load_kernel("no_such_source")
