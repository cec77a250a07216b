"""Reference texture (nerfvc.render.references): the ops against plain references, the blend on an analytic
textured plane seen from two head poses, the file's round trip and what training writes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from nerfvc.camera import Camera
from nerfvc.datasetdir import frame_path
from nerfvc.errors import ModelMismatchError
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.references import (
    REFERENCES_FILE,
    ReferenceFrames,
    blend_references,
    blend_references_torch,
    farthest_points,
    load_references_extension,
    low_pass,
    prepare_reference,
    project_to_reference,
    reference_key,
)
from nerfvc.render.renderer import Renderer, load_nerf
from nerfvc.train.dataset import load_dataset


def _pose(yaw_deg: float, tx: float = 0.0) -> torch.Tensor:
    """A head pose (12,): rotation about the vertical axis, the head 0.6 in front of the camera."""
    a = math.radians(yaw_deg)
    rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return torch.cat([rot.reshape(-1), torch.tensor([tx, 0.0, 0.6])]).float()


def test_low_pass_keeps_constants_and_spreads_an_impulse_by_about_sigma():
    flat = torch.full((1, 20, 24, 3), 0.3)
    torch.testing.assert_close(low_pass(flat, 2.0), flat)
    for sigma in (1.0, 2.0):
        img = torch.zeros(1, 41, 41, 1)
        img[0, 20, 20] = 1.0
        out = low_pass(img, sigma)[0, :, :, 0]
        assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
        x = torch.arange(41.0) - 20
        var = (out.sum(0) * x**2).sum().item()  # the blur's variance along one axis
        assert var == pytest.approx(sigma**2, rel=0.35)


def test_projection_into_a_reference_matches_the_camera_model():
    cam = Camera(50.0, 52.0, 16.0, 15.0, 32, 30)
    pose, ref_pose = _pose(0.0), _pose(12.0, tx=0.02)
    canonical = torch.tensor([[0.01, -0.02, 0.05], [-0.05, 0.03, -0.02]])
    rot, t = pose[:9].view(3, 3), pose[9:]
    points_cam = canonical @ rot.T + t  # X_cam = R X_can + t
    u, v, z = project_to_reference(points_cam, pose, pose, cam.fx, cam.fy, cam.cx, cam.cy)
    np.testing.assert_allclose(torch.stack([u, v], 1).numpy(), cam.project(points_cam.numpy()), rtol=1e-5)
    torch.testing.assert_close(z, points_cam[:, 2])
    x_ref = canonical @ ref_pose[:9].view(3, 3).T + ref_pose[9:]
    u, v, z = project_to_reference(points_cam, pose, ref_pose, cam.fx, cam.fy, cam.cx, cam.cy)
    np.testing.assert_allclose(torch.stack([u, v], 1).numpy(), cam.project(x_ref.numpy()), rtol=1e-5)
    torch.testing.assert_close(z, x_ref[:, 2])


def _plane_view(
    pose: torch.Tensor, cam: Camera, phase: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured square (canonical z = 0, |x|, |y| < 0.12) seen at head pose ``pose``: image (H,W,3), the
    same without its fine texture, depth (H,W) (0 off the square), each pixel's camera-space point (H,W,3).
    ``phase`` shifts the fine texture along x (radians of its ~4 px period)."""
    j, i = torch.meshgrid(torch.arange(cam.width) + 0.5, torch.arange(cam.height) + 0.5, indexing="xy")
    dirs = torch.stack([(j - cam.cx) / cam.fx, (i - cam.cy) / cam.fy, torch.ones_like(j)], -1)  # (H,W,3)
    rot, t = pose[:9].view(3, 3), pose[9:]
    normal = rot[:, 2]  # the plane's normal in camera space; it passes through t
    depth = (normal @ t) / (dirs @ normal)  # ray parameter = camera z (dirs have z = 1)
    points = dirs * depth[..., None]
    can = (points - t) @ rot  # (H,W,3) canonical
    inside = (can[..., 0].abs() < 0.12) & (can[..., 1].abs() < 0.12)
    x, y = can[..., 0], can[..., 1]
    smooth = torch.stack([0.5 + 0.25 * torch.sin(x * 25 + c) * torch.cos(y * 20 - c) for c in range(3)], -1)
    # ~4 px: what a NeRF renders soft
    fine = 0.12 * (torch.sin(x * 300 + phase) * torch.sin(y * 300))[..., None]
    texture = smooth + fine
    image = torch.where(inside[..., None], texture, torch.full_like(texture, 0.1))
    soft = torch.where(inside[..., None], smooth, image)
    return image, soft, depth * inside, points


BLENDS = {"torch": blend_references_torch, "fused": blend_references}
needs_kernel = pytest.mark.skipif(
    load_references_extension() is None, reason="no C++ compiler for the kernel"
)


@pytest.mark.parametrize("kernel", ["torch", pytest.param("fused", marks=needs_kernel)])
def test_the_blend_restores_texture_seen_from_another_pose_and_keeps_the_render_elsewhere(kernel):
    blend_references = BLENDS[kernel]
    cam = Camera(120.0, 120.0, 32.0, 32.0, 64, 64)
    pose, ref_pose = _pose(0.0), _pose(15.0, tx=0.015)
    truth, soft, depth, points = _plane_view(pose, cam)
    ref_image, _, ref_depth, _ = _plane_view(ref_pose, cam)
    render = soft + 0.02  # the NeRF's version: about the right colours, no fine texture
    alpha = (depth > 0).float()
    ref = prepare_reference(ref_image, ref_depth, ref_pose, 1.0)
    out = blend_references(render, alpha, points, pose, [ref], (cam.fx, cam.fy, cam.cx, cam.cy), 1.0)
    head = alpha > 0

    def err(x: torch.Tensor) -> float:
        return (x - truth)[head].abs().mean().item()

    assert err(out) < 0.6 * err(render)
    assert torch.equal(out[~head], render[~head])  # off the head: the render as it was
    # a reference projected with a wrong pose samples the wrong texture: no better than the render
    wrong = prepare_reference(ref_image, ref_depth, _pose(0.0, tx=0.03), 1.0)
    bad = blend_references(render, alpha, points, pose, [wrong], (cam.fx, cam.fy, cam.cx, cam.cy), 1.0)
    assert err(bad) > 0.8 * err(render)
    # a reference whose colours disagree with the render (another expression, light) is not used
    recoloured = prepare_reference(1 - ref_image, ref_depth, ref_pose, 1.0)
    kept = blend_references(render, alpha, points, pose, [recoloured], (cam.fx, cam.fy, cam.cx, cam.cy), 1.0)
    assert (kept - render).abs().max().item() < 0.05
    # nor one where the point is hidden (the reference's own depth is elsewhere)
    hidden = prepare_reference(ref_image, ref_depth * 0.8, ref_pose, 1.0)
    kept = blend_references(render, alpha, points, pose, [hidden], (cam.fx, cam.fy, cam.cx, cam.cy), 1.0)
    assert torch.equal(kept, render)


@pytest.mark.parametrize("kernel", ["torch", pytest.param("fused", marks=needs_kernel)])
def test_the_blend_keeps_the_detail_energy_of_references_that_do_not_align(kernel, monkeypatch):
    """Two references whose fine texture is a quarter period apart (a misregistration of ~1 px): their mean
    detail has half their energy; the blend restores it (the gain is 1 where they align)."""
    import nerfvc.render.references as references

    blend_references = BLENDS[kernel]
    cam = Camera(120.0, 120.0, 32.0, 32.0, 64, 64)
    pose, ref_pose = _pose(0.0), _pose(10.0)
    truth, soft, depth, points = _plane_view(pose, cam)
    intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)
    ref_depth = _plane_view(ref_pose, cam)[2]
    refs = [
        prepare_reference(_plane_view(ref_pose, cam, phase)[0], ref_depth, ref_pose, 1.0)
        for phase in (0.0, math.pi / 2)
    ]
    alpha = (depth > 0).float()
    inner = F.max_pool2d(1 - alpha[None, None], 9, 1, 4)[0, 0] == 0  # the square less its edge band

    def detail_energy(image: torch.Tensor) -> float:
        return ((image - low_pass(image[None], 1.0)[0]) ** 2).sum(-1)[inner].mean().item()

    one = detail_energy(blend_references(soft, alpha, points, pose, refs[:1], intrinsics, 1.0))
    kept = detail_energy(blend_references(soft, alpha, points, pose, refs, intrinsics, 1.0))
    monkeypatch.setattr(references, "DETAIL_GAIN_MAX", 1.0)  # the plain mean
    mean = detail_energy(blend_references(soft, alpha, points, pose, refs, intrinsics, 1.0))
    assert one > 0.5 * detail_energy(truth)  # one reference: its detail, resampled
    assert mean < 0.6 * one  # the plain mean: about half
    assert 0.85 * one < kept < 1.1 * one


@pytest.mark.parametrize("kernel", ["torch", pytest.param("fused", marks=needs_kernel)])
def test_a_reference_a_pixel_off_is_aligned_before_it_is_blended(kernel, monkeypatch):
    """A reference drawn at a head pose ~1 px from the one it is stored with (tracking error): the blend finds
    the shift (a colour offset between render and reference does not pull it) and restores the texture much
    better than at the projected points."""
    import nerfvc.render.references as references

    blend_references = BLENDS[kernel]
    cam = Camera(120.0, 120.0, 32.0, 32.0, 64, 64)
    pose, ref_pose = _pose(0.0), _pose(15.0, tx=0.015)
    truth, soft, depth, points = _plane_view(pose, cam)
    ref_depth = _plane_view(ref_pose, cam)[2]
    drawn = _plane_view(_pose(15.0, tx=0.02), cam)[0]  # 0.005 further along x: ~1 px
    ref = prepare_reference(drawn, ref_depth, ref_pose, 1.0)
    alpha = (depth > 0).float()
    head = alpha > 0
    intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)

    def err(render: torch.Tensor) -> float:
        out = blend_references(render, alpha, points, pose, [ref], intrinsics, 1.0)
        return (out - truth)[head].abs().mean().item()

    aligned, offset = err(soft), err(soft + 0.02)
    monkeypatch.setattr(references, "ALIGN_STEPS", 0)  # no search: the projected points
    projected = err(soft + 0.02)
    render_err = (soft + 0.02 - truth)[head].abs().mean().item()
    assert projected > 0.9 * render_err  # a pixel off, the fine texture adds as much error as it removes
    assert offset < 0.7 * projected and aligned < 0.7 * projected


@needs_kernel
def test_the_fused_blend_matches_the_torch_blend():
    """Several references, samples inside, at the edge of and outside their crops, hidden and visible points,
    partial head opacity, a head touching the frame's edge: the kernel gives the torch op's frame, the same
    bits on 1 and 2 threads."""
    cam = Camera(120.0, 120.0, 32.0, 32.0, 64, 64)
    pose = _pose(0.0)
    _, soft, depth, points = _plane_view(pose, cam)
    gen = torch.Generator().manual_seed(0)
    render = (soft + 0.05 * torch.rand(soft.shape, generator=gen)).clamp(0, 1)
    alpha = (depth > 0).float() * torch.rand(depth.shape, generator=gen).add(0.3).clamp(max=1)
    alpha[:, :3] = 1.0  # a head reaching the left edge: the low band's box is cut by the frame
    points[:, :3] = points[:, 3:4]
    refs = []
    for yaw, tx, depth_scale in ((15.0, 0.015, 1.0), (-10.0, -0.01, 1.0), (25.0, 0.04, 1.0), (5.0, 0.0, 0.9)):
        ref_pose = _pose(yaw, tx=tx)
        ref_image, _, ref_depth, _ = _plane_view(ref_pose, cam)
        ref_image = ref_image + 0.03 * torch.rand(ref_image.shape, generator=gen)
        refs.append(prepare_reference(ref_image, ref_depth * depth_scale, ref_pose, 1.5))
    intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)
    before = torch.get_num_threads()
    try:
        for k in (1, 4):
            want = blend_references_torch(render, alpha, points, pose, refs[:k], intrinsics, 1.5)
            got = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                got.append(blend_references(render, alpha, points, pose, refs[:k], intrinsics, 1.5))
            assert (want - render).abs().max() > 0.01  # the references changed the frame
            torch.testing.assert_close(got[0], want, atol=2e-5, rtol=0)
            assert torch.equal(got[0], got[1])
        assert torch.equal(blend_references(render, alpha * 0, points, pose, refs, intrinsics, 1.5), render)
    finally:
        torch.set_num_threads(before)


def test_farthest_points_spread_over_the_keys():
    keys = torch.tensor([[0.0], [0.1], [0.2], [0.5], [0.9], [1.0], [0.45]])
    pick = farthest_points(keys, 3).tolist()
    assert len(set(pick)) == 3 and pick[0] in (3, 6)  # nearest to the mean first
    assert {0, 5} <= set(pick)  # then both ends
    assert sorted(farthest_points(keys, 50).tolist()) == list(range(7))


def test_training_writes_references_that_round_trip(tiny_model, tmp_path):
    ds_root, model_dir = tiny_model
    refs = ReferenceFrames.load(model_dir)
    assert refs is not None
    ds = load_dataset(ds_root, None)
    model, _, _ = load_nerf(model_dir)
    n_train = len(ds.train_idx)
    assert len(refs) == min(64, n_train) and refs.images.shape[1:] == ds.frames.shape[1:]
    for k in range(len(refs)):  # each reference is a training frame: its image, inputs and pose
        i = int(((ds.pose[ds.train_idx] - refs.poses[k]) ** 2).sum(1).argmin())
        f = int(ds.train_idx[i])
        torch.testing.assert_close(refs.inputs[k], ds.expression[f])
        frame = np.asarray(Image.open(frame_path(ds_root, f)).convert("RGB"))
        assert np.abs(refs.images[k].numpy().astype(int) - frame).mean() < 3  # JPEG
    keys = reference_key(model, ds.expression[ds.train_idx], ds.pose[ds.train_idx])
    assert len(keys) == n_train
    # save → load is the identity on inputs and poses, and close on the images
    refs.save(tmp_path)
    again = ReferenceFrames.load(tmp_path)
    assert again is not None
    torch.testing.assert_close(again.poses, refs.poses)
    assert np.abs(again.images.numpy().astype(int) - refs.images.numpy()).mean() < 2
    assert ReferenceFrames.load(tmp_path / "none") is None
    (tmp_path / REFERENCES_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelMismatchError, match=REFERENCES_FILE):
        ReferenceFrames.load(tmp_path)
    assert set(load_file(str(model_dir / REFERENCES_FILE))) == {"jpeg", "jpeg_offsets", "inputs", "poses"}


def test_the_renderer_uses_references_only_when_asked_and_present(tiny_model):
    _, model_dir = tiny_model
    with_refs = Renderer.from_model_dir(model_dir)
    without = Renderer.from_model_dir(model_dir, references=False)
    assert with_refs.references is not None and without.references is None
    k = 3
    refs = with_refs.references
    a = with_refs.render_float(refs.inputs[k].numpy(), refs.poses[k].numpy(), 32, 32)
    b = without.render_float(refs.inputs[k].numpy(), refs.poses[k].numpy(), 32, 32)
    assert a.shape == b.shape == (32, 32, 3)
    # the blend only ever moves pixels toward the reference's colours
    truth = refs.images[k].float() / 255
    assert (a - truth).abs().mean() <= (b - truth).abs().mean() + 1e-6


@pytest.mark.parametrize("every_ray", [False, True])
def test_renders_of_one_expression_from_several_poses_are_each_the_single_render(tiny_model, every_ray):
    """``render_poses`` shares the expression's head fields between the poses: each of its images is the
    one ``render_float`` draws (reference texture on; the frame renderer and the training renderer)."""
    _, model_dir = tiny_model
    r = Renderer.from_model_dir(model_dir, reference=every_ray)
    assert r.references is not None
    refs = r.references
    e = refs.inputs[5].numpy()
    poses = refs.poses[[5, 0, 11]].numpy()  # (3,12): the frame's own and two others
    poses[2, 9] += 0.02  # and one moved sideways
    many = [v.image for v in r.render_poses(e, poses, 32, 24)]
    singles = [r.render_float(e, p, 32, 24) for p in poses]
    assert len(many) == 3
    for a, b in zip(many, singles, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (many[0] - many[2]).abs().max() > 0.01  # the poses drew different pictures


def test_references_for_another_model_are_refused(tiny_model):
    _, model_dir = tiny_model
    model, camera, bg = load_nerf(model_dir)
    refs = ReferenceFrames.load(model_dir)
    assert refs is not None
    wrong = ReferenceFrames(refs.images, refs.inputs[:, :-1], refs.poses)
    with pytest.raises(ModelMismatchError, match="inputs"):
        Renderer(model, camera, bg, references=wrong)


def _dense_model() -> PortraitNeRF:
    """A random model whose head is opaque within a few samples."""
    torch.manual_seed(0)
    model = PortraitNeRF(ModelConfig(head_lo=[-0.1, -0.1, -0.1], head_hi=[0.1, 0.1, 0.1])).eval()
    with torch.no_grad():
        for head in (model.coarse, model.fine):
            head.grid.table.normal_(0, 0.3)
            head.sigma_net[2].bias[0] += 4.0
        model.occupancy.mask.fill_(True)
    return model


def test_the_frame_renderer_depth_matches_the_training_renderer():
    from nerfvc.render.fast import render_frame
    from nerfvc.render.renderer import frame_rays

    model = _dense_model()
    cam = Camera(60.0, 60.0, 16.0, 16.0, 32, 32)
    dirs, uv, bg = frame_rays(cam, np.zeros((32, 32, 3), np.uint8), 32, 32)
    inputs, pose = torch.zeros(1, model.input_dim), _pose(10.0)[None]
    with torch.inference_mode():
        fast = render_frame(model, dirs, uv, bg, 32, 32, inputs, pose)
        ref = model.render_rays(dirs, uv, inputs, pose, bg)
    opaque = (fast.head_alpha > 0.95) & (ref["head_alpha"] > 0.95)
    assert opaque.sum() > 100
    d_fast, d_ref = fast.head_depth[opaque], ref["head_depth"][opaque]
    # inside the head box (0.5 to 0.7 in front of the camera), and the same surface: the two differ by far
    # less than the surface's depth varies over the frame (measured 0.0016 against 0.0092)
    assert (d_ref > 0.45).all() and (d_ref < 0.75).all()
    assert (d_fast - d_ref).abs().mean().item() < 0.3 * d_ref.std().item()
    assert (fast.head_depth[fast.head_alpha == 0] == 0).all()
    torch.testing.assert_close(fast.head_alpha, ref["head_alpha"], atol=0.15, rtol=0)
    assert F.mse_loss(fast.rgb, ref["rgb"]).item() < 1e-2


def test_a_ray_stopped_in_the_head_shows_no_background():
    """A frame-renderer ray whose transmittance is spent stops early; filled (the default), the head hides
    what lies behind it, as the training renderer's full march does; left as stopped, a few percent of the
    background showed through the face."""
    from nerfvc.render.fast import FastRenderConfig, render_frame
    from nerfvc.render.renderer import frame_rays

    model = _dense_model()
    cam = Camera(60.0, 60.0, 16.0, 16.0, 32, 32)
    dirs, uv, _ = frame_rays(cam, np.zeros((32, 32, 3), np.uint8), 32, 32)
    inputs, pose = torch.zeros(1, model.input_dim), _pose(10.0)[None]
    black, white = torch.zeros(32 * 32, 3), torch.ones(32 * 32, 3)
    with torch.inference_mode():
        ref = model.render_rays(dirs, uv, inputs, pose, white)["rgb"]
        frames = {
            fill: [
                render_frame(model, dirs, uv, bg, 32, 32, inputs, pose, FastRenderConfig(fill_stopped=fill))
                for bg in (black, white)
            ]
            for fill in (True, False)
        }
    on_black, on_white = frames[True]
    stopped = on_white.head_alpha == 1.0
    assert stopped.sum() > 100
    torch.testing.assert_close(on_black.rgb[stopped], on_white.rgb[stopped], atol=1e-6, rtol=0)
    loose_black, loose_white = frames[False]
    assert (loose_white.rgb[stopped] - loose_black.rgb[stopped]).abs().amax().item() > 0.005
    assert F.mse_loss(on_white.rgb, ref).item() < F.mse_loss(loose_white.rgb, ref).item()
