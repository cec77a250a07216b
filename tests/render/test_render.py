"""Rays, box intersection, samplers and volume rendering on cases with known answers."""

import math

import numpy as np
import pytest
import torch

from nerfvc.camera import Camera
from nerfvc.errors import InputError
from nerfvc.render.rays import intersect_box, pixel_rays, to_canonical
from nerfvc.render.samplers import OccupancyGrid, importance, stratified
from nerfvc.render.volume import accumulate, composite, distortion, render_weights
from nerfvc.train.synthetic import rotation
from tests.pipeline.scenes import POSE, SIZE, random_head


def test_pixel_rays_project_back_to_their_pixels():
    cam = Camera(50.0, 60.0, 16.5, 11.0, 32, 24)
    dirs, uv = pixel_rays(cam)
    assert dirs.shape == (32 * 24, 3)
    px = cam.project(dirs.numpy().astype(np.float64) * 2.0)  # any depth
    i, j = np.divmod(np.arange(32 * 24), 32)
    np.testing.assert_allclose(px, np.stack([j + 0.5, i + 0.5], -1), atol=1e-4)
    np.testing.assert_allclose(uv[:, 0].numpy(), (j + 0.5) / 32, atol=1e-6)


def test_to_canonical_inverts_the_pose():
    r = torch.tensor(rotation(0.3, -0.2, 0.1), dtype=torch.float32)
    t = torch.tensor([0.05, -0.02, 0.7])
    pose = torch.cat([r.reshape(-1), t]).expand(4, 12)
    x_can = torch.tensor([[0.01, 0.02, -0.03]] * 4)
    x_cam = x_can @ r.T + t  # a camera-space point on each ray
    dirs = x_cam / x_cam[:, 2:3]
    o, d = to_canonical(dirs, pose)
    torch.testing.assert_close(o + d * x_cam[:, 2:3], x_can, atol=1e-6, rtol=0)


def test_box_intersection():
    o = torch.tensor([[0.0, 0.0, -5.0], [0.0, 3.0, -5.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    tn, tf, hit = intersect_box(o, d, torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1]))
    assert hit.tolist() == [True, False]
    assert math.isclose(tn[0].item(), 4.0) and math.isclose(tf[0].item(), 6.0)


def test_volume_rendering_of_an_opaque_wall_and_a_void():
    sigma = torch.tensor([[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, 0.0, 0.0]])
    w = render_weights(sigma, torch.full_like(sigma, 0.1))
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]).expand(2, 4, 3)
    color, alpha = accumulate(w, rgb)
    torch.testing.assert_close(color[0], torch.tensor([0.0, 0, 1]))
    torch.testing.assert_close(alpha, torch.tensor([1.0, 0.0]))
    bg = torch.tensor([[0.5, 0.5, 0.5]] * 2)
    out = composite(color, alpha, torch.zeros(2, 3), torch.tensor([0.0, 0.0]), bg)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0, 1], [0.5, 0.5, 0.5]]))


def test_composite_without_autograd_matches_the_differentiable_one_and_leaves_inputs_alone():
    g = torch.Generator().manual_seed(0)
    head_rgb, torso_rgb, bg = (torch.rand(64, 3, generator=g) for _ in range(3))
    head_alpha, torso_alpha = torch.rand(64, generator=g), torch.rand(64, generator=g)
    head_rgb = head_rgb * head_alpha[:, None]  # premultiplied
    inputs = [head_rgb, head_alpha, torso_rgb, torso_alpha, bg]
    copies = [t.clone() for t in inputs]
    trained = composite(*[t.clone().requires_grad_() for t in inputs])
    with torch.no_grad():
        rendered = composite(*inputs)
    torch.testing.assert_close(rendered, trained.detach())
    behind = torso_alpha[:, None] * torso_rgb + (1 - torso_alpha[:, None]) * bg
    expected = head_rgb + (1 - head_alpha[:, None]) * behind
    torch.testing.assert_close(rendered, expected)
    for t, c in zip(inputs, copies, strict=True):
        assert torch.equal(t, c)


def test_importance_sampling_concentrates_where_the_weight_is():
    edges = stratified(torch.zeros(1), torch.ones(1), 10, jitter=False)
    weights = torch.zeros(1, 10)
    weights[0, 6] = 1.0
    new = importance(edges, weights, 32, jitter=False)
    mid = 0.5 * (new[0, 1:] + new[0, :-1])
    inside = ((mid >= 0.5) & (mid <= 0.8)).float().mean()  # the bin and its dilated neighbours
    assert inside > 0.9
    assert (new[0, 1:] >= new[0, :-1]).all()


def test_occupancy_grid_prunes_empty_cells_but_keeps_a_margin():
    grid = OccupancyGrid(8)
    assert grid.occupied_fraction == 1.0
    pts = grid.cell_points(jitter=False)
    density = ((pts - 0.5).norm(dim=-1) < 0.2).float() * 10
    grid.update(density, threshold=1.0)
    assert 0 < grid.occupied_fraction < 0.5
    assert grid.query(torch.tensor([[0.5, 0.5, 0.5], [0.01, 0.01, 0.01]])).tolist() == [True, False]


def test_only_the_used_expression_coefficients_reach_the_picture():
    """``ModelConfig.expression_used = K``: the training renderer and the frame renderer draw the same picture
    whatever the coefficients from K on hold, and a different one when one below K moves."""
    from nerfvc.render.model import ModelConfig, PortraitNeRF
    from nerfvc.render.renderer import Renderer

    torch.manual_seed(0)
    cfg = ModelConfig(head_lo=[-0.2, -0.25, -0.2], head_hi=[0.2, 0.2, 0.2], expression_used=5)
    cfg.fine.blend_res = 7
    model = PortraitNeRF(cfg).eval()
    with torch.no_grad():
        for head in (model.coarse, model.fine):
            head.grid.table.normal_(0, 1.0)
            head.sigma_net[2].bias[0] += 2.0
        model.fine.blend.normal_(0, 0.5)
        model.occupancy.mask.fill_(True)
    camera, background = Camera.from_fov(16, 16, 40.0), np.zeros((16, 16, 3), np.uint8)
    pose = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1.0], np.float32)
    base = np.random.default_rng(0).normal(0, 1, 79).astype(np.float32)
    minor, major = base.copy(), base.copy()
    minor[5:] += 3.0
    major[2] += 3.0
    for reference in (True, False):  # the training renderer, the frame renderer
        renderer = Renderer(model, camera, background, reference=reference)
        pictures = [renderer.render_float(e, pose, 16, 16).numpy() for e in (base, minor, major)]
        np.testing.assert_array_equal(pictures[0], pictures[1])
        assert np.abs(pictures[0] - pictures[2]).max() > 1e-3


def test_distortion_equals_its_pairwise_definition_and_prefers_one_sharp_surface():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(6, 9, generator=g, requires_grad=True)
    edges = torch.sort(torch.rand(6, 10, generator=g), 1)[0]
    mid, width = 0.5 * (edges[:, 1:] + edges[:, :-1]), edges[:, 1:] - edges[:, :-1]
    pairwise = (w[:, :, None] * w[:, None, :] * (mid[:, :, None] - mid[:, None, :]).abs()).sum((1, 2))
    pairwise = pairwise + (w.square() * width).sum(1) / 3
    fast = distortion(w, edges)
    torch.testing.assert_close(fast, pairwise)
    (ga,) = torch.autograd.grad(fast.sum(), w)
    (gb,) = torch.autograd.grad(pairwise.sum(), w)
    torch.testing.assert_close(ga, gb)
    # the same opacity in one bin, in two far-apart bins, spread over all: sharp < split < spread
    e = torch.linspace(0, 1, 9).expand(3, 9)
    sharp, split, spread = torch.zeros(3, 8).unbind(0)
    sharp[3] = 1.0
    split[0] = split[7] = 0.5
    spread[:] = 1 / 8
    d = distortion(torch.stack([sharp, split, spread]), e)
    assert d[0] < d[2] < d[1], d


@pytest.mark.parametrize("bad", ["expression", "pose"])
def test_a_non_finite_expression_or_pose_is_refused_before_the_kernels_see_it(bad):
    renderer = random_head()
    expression, pose = np.zeros(81, np.float32), POSE.copy()
    (expression if bad == "expression" else pose)[0] = np.nan
    with pytest.raises(InputError, match="finite"):
        renderer.render(expression, pose, SIZE, SIZE)
