"""Frame renderer ops: the fused C++ march and torso equal their pure-torch references, op by op."""

import dataclasses

import pytest
import torch

from nerfvc.field.fields import TorsoField, field_settings
from nerfvc.field.frame import FrameHead, FrameTorso
from nerfvc.field.fused import fused_density_available, half_rounded, pack_half_pairs, ray_box
from nerfvc.render.fast import FastRenderConfig, _march, _unit_fine_edges, march_torch
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.rays import intersect_box

pytestmark = pytest.mark.skipif(not fused_density_available(), reason="no C++ compiler for the fused kernel")


def _model(seed: int, view_dir: bool, blend_res: int = 31, color_code: bool = True) -> PortraitNeRF:
    """A random model whose heads are dense enough that rays terminate early, with a random occupancy mask
    (and random expression blend shapes in the fine head, unless ``blend_res`` is 0)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(head_lo=[-0.2, -0.25, -0.1], head_hi=[0.2, 0.2, 0.3])
    cfg.fine.use_view_dir = view_dir
    cfg.coarse.color_code = cfg.fine.color_code = color_code
    cfg.fine.blend_res = blend_res
    model = PortraitNeRF(cfg).eval()
    with torch.no_grad():
        for head in (model.coarse, model.fine):
            head.grid.table.normal_(0, 1.0)
            head.sigma_net[2].bias[0] += 3.0  # raw density ~ exp(2 + noise): opaque within a few samples
        if blend_res:
            model.fine.blend.normal_(0, 0.5)
        model.occupancy.mask.copy_(torch.rand(64, 64, 64) > 0.3)
    return model


def _rays(model: PortraitNeRF, n: int, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays from a camera at z=-1 towards the box: origins, directions (R,3), uneven bin edges (R,S+1)."""
    g = torch.Generator().manual_seed(1)
    origin = torch.tensor([0.0, 0.0, -1.0]).expand(n, 3).contiguous()
    direction = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.3, torch.ones(n, 1)], 1)
    t_near, t_far, hit = intersect_box(origin, direction, model.head_lo, model.head_hi)
    assert hit.all()
    u = torch.rand(n, samples + 1, generator=g).sort(1).values
    u = torch.cat([torch.zeros(n, 1), u[:, 1:-1], torch.ones(n, 1)], 1)
    return origin, direction, t_near[:, None] + (t_far - t_near)[:, None] * u


@pytest.mark.parametrize(
    "view_dir,half,color_code",
    [(True, False, True), (False, False, True), (True, True, True), (True, False, False)],
)
@pytest.mark.parametrize("chunk,stop,min_weight", [(4, 1e-2, 1e-4), (3, 0.3, 0.0), (16, 0.0, 0.05)])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_march_matches_the_torch_march(view_dir, half, color_code, chunk, stop, min_weight, threads):
    model = _model(0, view_dir, color_code=color_code)
    if half:  # the reference reads the same float16-rounded features the packed table holds
        with torch.no_grad():
            for head in (model.coarse, model.fine):
                head.grid.table.copy_(half_rounded(head.grid.table))
    cfg = FastRenderConfig(chunk=chunk, stop_transmittance=stop, color_min_weight=min_weight)
    code = torch.randn(1, model.fine.cfg.code_dim)
    cons = torch.randn(1, model.cfg.consistency_dim)
    origin, direction, edges = _rays(model, 300, 12)  # 300 rays: 5 blocks of 64, the last one partial
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for head_field, with_color in ((model.coarse, False), (model.fine, True)):
                c = code[:, : head_field.cfg.code_dim]
                with field_settings(torch.float32, "torch"):
                    ref = march_torch(
                        model, FrameHead(head_field, c, cons), origin, direction, edges, cfg, with_color
                    )
                with field_settings(torch.float32, "fused"):
                    head = FrameHead(head_field, c, cons, half_table=half)
                    assert head.fused is not None and (head.half_table is not None) == half
                    out = _march(model, head, origin, direction, edges, cfg, with_color)
                    lean = _march(model, head, origin, direction, edges, cfg, with_color, with_weights=False)
                for a, b in zip(out, ref):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
                assert lean.weights.shape == (0, edges.shape[1] - 1)  # the rest as with the weights
                for a, b in zip(lean[1:], out[1:]):
                    assert torch.equal(a, b)
                weights, rgb, opacity, depth = ref
                assert 0.1 < opacity.mean() < 1.0  # some rays are opaque, some are not
                # the expected depth lies inside each weighing ray's bins (0 where nothing weighs)
                weighs = weights.sum(1) > 1e-6
                assert (depth[weighs] >= edges[weighs, 0] - 1e-5).all()
                assert (depth[weighs] <= edges[weighs, -1] + 1e-5).all()
                assert (depth[weights.sum(1) == 0] == 0).all()
                if stop > 0:
                    assert (weights[:, -1] == 0).any()  # early termination left samples unevaluated
                assert rgb.abs().sum() > 0 if with_color else rgb.abs().sum() == 0
                if with_color and min_weight > 0:  # each skipped sample would have added at most its weight
                    every = dataclasses.replace(cfg, color_min_weight=0.0)
                    with field_settings(torch.float32, "torch"):
                        full = march_torch(
                            model, FrameHead(head_field, c, cons), origin, direction, edges, every, True
                        )[1]
                    gap = (full - rgb).abs().max()
                    assert gap <= 12 * min_weight and (gap > 0 or min_weight < 0.01)
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("colour_bias", [-200.0, 200.0])
def test_fused_march_saturates_like_the_torch_march(colour_bias):
    """Densities past the cap and colours far beyond the sigmoid's range (the kernel's vectorised exp clamps
    its argument): every occupied ray is opaque at its first occupied sample, its colour 0 or its weight."""
    model = _model(1, True)
    with torch.no_grad():
        model.fine.sigma_net[2].bias[0] += 60.0  # raw density far above the cap of exp(15)
        model.fine.color_net[-1].bias += colour_bias
    cfg = FastRenderConfig()
    code, cons = torch.randn(1, model.fine.cfg.code_dim), torch.randn(1, model.cfg.consistency_dim)
    origin, direction, edges = _rays(model, 200, 12)
    with torch.inference_mode():
        with field_settings(torch.float32, "torch"):
            ref = march_torch(model, FrameHead(model.fine, code, cons), origin, direction, edges, cfg, True)
        with field_settings(torch.float32, "fused"):
            out = _march(model, FrameHead(model.fine, code, cons), origin, direction, edges, cfg, True)
    for a, b in zip(out, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    hit = ref.opacity > 0
    assert hit.float().mean() > 0.5 and (ref.opacity[hit] == 1).all()
    assert ((ref.weights[hit] > 0).sum(1) == 1).all()  # all of the weight on one sample
    expected = torch.zeros_like(ref.rgb) if colour_bias < 0 else ref.opacity[:, None].expand(-1, 3)
    torch.testing.assert_close(out.rgb, expected, rtol=0, atol=1e-6)


def test_fused_march_of_no_rays_is_empty():
    model = _model(0, True)
    with torch.inference_mode(), field_settings(torch.float32, "fused"):
        head = FrameHead(model.fine, torch.zeros(1, 16), torch.zeros(1, 8))
        e = torch.zeros(0, 13)
        w, rgb, a, z = _march(model, head, torch.zeros(0, 3), torch.zeros(0, 3), e, FastRenderConfig(), True)
    assert w.shape == (0, 12) and rgb.shape == (0, 3) and a.shape == (0,) and z.shape == (0,)


@pytest.mark.parametrize("shift", [None, (0.03, -0.02), (0.03, -0.02, 0.01, 0.004)])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_torso_matches_the_torso_field(shift, threads):
    model = _model(0, True)
    if shift is not None and len(shift) == 4:  # a torso that takes the shift into its MLPs, halves and all
        model.torso = TorsoField(
            dataclasses.replace(model.cfg.torso, shift_inputs=4), model.cfg.consistency_dim
        )
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.torso.parameters():
            p.normal_(0, 0.5)  # a deformation that moves, planes with detail
    pose, cons = torch.randn(1, 12), torch.randn(1, model.cfg.consistency_dim)
    sh = None if shift is None else torch.tensor([shift])
    uv = torch.rand(1000, 2)
    uv[:4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])  # corners: the border padding
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            ref = model.torso(uv, pose, cons, sh)
            with field_settings(torch.float32, "fused"):
                torso = FrameTorso(model.torso, pose, cons, sh)
                assert torso.fused is not None
                out = torso(uv)
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # weights ~N(0, 0.5): large activations
    assert ref[1].std() > 0.05 and ref[0].std() > 0.05  # not a constant output
    if sh is not None and sh.shape[1] == 4:  # the halves' turn reaches the MLPs, and not the lookup alone
        with torch.inference_mode():
            still = model.torso(uv, pose, cons, torch.cat([sh[:, :2], torch.zeros(1, 2)], 1))
        assert (still[0] - ref[0]).abs().max() > 1e-3


@pytest.mark.parametrize("n", [1, 8, 12])
def test_fused_fine_edges_match_the_torch_sampler(n):
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(50, 24, generator=g) ** 8  # peaked weights
    coarse[:10] = 0.0  # empty rays (uniform bins), then
    coarse[5:10, 10] = 1.0  # one opaque bin
    neighbours = torch.randint(0, 50, (4, 400), generator=g)
    neighbours[:, :20] = torch.arange(20)  # cells whose corners are all one coarse ray
    with torch.inference_mode():
        model = _model(0, True)
        out = {}
        for kernel in ("torch", "fused"):
            with field_settings(torch.float32, kernel):
                head = FrameHead(model.fine, torch.zeros(1, 16), torch.zeros(1, 8))
                out[kernel] = _unit_fine_edges(coarse, neighbours, n, head)
    torch.testing.assert_close(out["fused"], out["torch"], rtol=1e-5, atol=1e-5)
    edges = out["fused"]
    assert edges.shape == (400, n + 1) and (edges.diff(dim=1) >= 0).all()
    assert (edges[:, 0] == 0).all() and torch.allclose(edges[:, -1], torch.ones(400))
    if n > 2:  # the inner edges: concentrated at the opaque bin, uniform when the coarse rays saw nothing
        spread = edges[:, -2] - edges[:, 1]
        assert spread[5:10].max() < 0.2 < 0.5 < spread[:5].min()


def test_packed_half_table_is_reused_until_the_grid_changes():
    """The float16 pairs of the hash table are packed once, not per frame, and again after a training step."""
    model = _model(0, True, blend_res=0)
    code, cons = torch.randn(1, model.fine.cfg.code_dim), torch.zeros(1, model.cfg.consistency_dim)
    with field_settings(torch.float32, "fused"):
        with torch.inference_mode():
            first = FrameHead(model.fine, code, cons, half_table=True).half_table
            again = FrameHead(model.fine, code, cons, half_table=True).half_table
        assert again is first and torch.equal(first, pack_half_pairs(model.fine.grid.table))
        with torch.no_grad():
            model.fine.grid.table.add_(0.5)  # as an optimiser step does
        with torch.inference_mode():
            after = FrameHead(model.fine, code, cons, half_table=True).half_table
        assert torch.equal(after, pack_half_pairs(model.fine.grid.table)) and not torch.equal(after, first)


def test_half_tables_hold_float16_values_with_subnormals_flushed():
    """What the fused march reads from a packed table: each feature rounded to float16, magnitudes below the
    smallest normal float16 as zero (the march widens halves by bit arithmetic, where subnormals are slow)."""
    values = torch.tensor([0.0, -0.0, 1.0, -2.5, 1e-3, -7e-5, 6.2e-5, 6.0e-5, -3e-6, 1e-8, 1234.5, 0.1])
    table = values.view(1, -1, 2)
    held = half_rounded(table)
    tiny = values.abs() < 2.0**-14
    assert torch.equal(held.view(-1)[tiny], torch.zeros(int(tiny.sum())))
    assert torch.equal(held.view(-1)[~tiny], values[~tiny].half().float())
    words = pack_half_pairs(table)  # (1,6): feature 0 in the low half of each word
    halves = words.view(torch.int16).view(1, 6, 2).view(torch.float16).float()
    assert torch.equal(halves, held)


@pytest.mark.parametrize("shared_origin", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_ray_box_equals_the_slab_test(shared_origin, threads):
    """The fused ray/box pass gives exactly ``intersect_box``'s values, axis-parallel rays included."""
    if not fused_density_available():
        pytest.skip("no C++ compiler for the fused kernels")
    g = torch.Generator().manual_seed(3)
    n = 10000  # several blocks of 4096
    direction = torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0])  # towards the box
    direction[::7, 0] = 0.0  # parallel to a slab: the 1e-9 stand-in
    direction[::11, 1] = 1e-12
    camera = torch.tensor([[0.1, -0.2, -3.0]])
    origin = camera.expand(n, 3) if shared_origin else camera + 0.3 * torch.randn(n, 3, generator=g)
    lo, hi = torch.tensor([-0.5, -0.6, -0.4]), torch.tensor([0.5, 0.4, 0.7])
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = ray_box(origin, direction, lo, hi)
    finally:
        torch.set_num_threads(prev)
    ref = intersect_box(origin, direction, lo, hi)
    for a, b in zip(fused, ref):
        assert torch.equal(a, b)
    assert 0.05 < ref[2].float().mean() < 0.95  # some rays hit the box, some miss it
