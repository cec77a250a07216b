"""Seams where the head layer ends (nerfvc.eval.seam): a cut the frame does not have is found, a true edge is
not called one, and the renderer's head opacity is the one the seams are measured at."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfvc.camera import Camera
from nerfvc.eval.seam import edge_jumps, pooled, seam_pairs
from nerfvc.face.segment import BACKGROUND, HEAD, TORSO
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.rays import intersect_box, pixel_rays, to_canonical
from nerfvc.render.renderer import Renderer

SIZE = 32


def _scene(below: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame whose colour ramps smoothly down the rows (no edge anywhere), the head layer over the top half
    and label ``below`` under it → truth (H,W,3) uint8, head opacity (H,W), labels (H,W)."""
    ramp = np.linspace(40, 200, SIZE)[:, None, None] * np.ones((1, SIZE, 3))
    alpha = np.zeros((SIZE, SIZE))
    alpha[: SIZE // 2] = 1.0
    labels = np.full((SIZE, SIZE), below, np.uint8)
    labels[: SIZE // 2] = HEAD
    return ramp.round().astype(np.uint8), alpha, labels


def test_a_layer_cut_the_frame_lacks_is_a_seam_and_a_perfect_render_has_none():
    truth, alpha, labels = _scene(TORSO)
    cut = truth.astype(int)
    cut[SIZE // 2 :] += 30  # the torso layer's colour is off: a step where the head layer ends
    cut = cut.clip(0, 255).astype(np.uint8)
    seam = edge_jumps(cut, truth, alpha, labels)["seam"]
    assert seam["pairs"] == SIZE  # one vertical pair per column crosses the edge; no horizontal pair does
    assert seam["render"] > seam["truth"] + 25
    assert seam["error"] == pytest.approx(30, abs=1)
    inside = edge_jumps(cut, truth, alpha, labels)["interior"]
    assert inside["error"] == pytest.approx(0, abs=1e-6)  # the cut changes nothing inside the head

    exact = edge_jumps(truth, truth, alpha, labels)
    assert exact["seam"]["render"] == pytest.approx(exact["seam"]["truth"])
    assert exact["seam"]["error"] == 0 and exact["outline"]["pairs"] == 0


def test_an_edge_the_frame_has_too_is_not_a_seam():
    truth, alpha, labels = _scene(BACKGROUND)
    truth[SIZE // 2 :] = 250  # the frame itself steps where the head ends: an outline
    out = edge_jumps(truth, truth, alpha, labels)
    assert out["seam"]["pairs"] == 0
    assert out["outline"]["pairs"] == SIZE
    assert out["outline"]["render"] == pytest.approx(out["outline"]["truth"]) and out["outline"]["truth"] > 30


def test_box_pairs_only_where_the_head_layer_is_drawn_at_the_box_edge():
    truth, alpha, labels = _scene(TORSO)
    box = np.zeros((SIZE, SIZE), bool)
    box[: SIZE // 4] = True  # the box's outline inside the head layer: the head is cut there
    assert edge_jumps(truth, truth, alpha, labels, box)["box"]["pairs"] == SIZE
    box[:] = False
    box[: 3 * SIZE // 4] = True  # the outline where the head layer is empty
    assert edge_jumps(truth, truth, alpha, labels, box)["box"]["pairs"] == 0
    sets = seam_pairs(alpha, labels)
    assert [s["seam"].shape for s in sets] == [(SIZE, SIZE - 1), (SIZE - 1, SIZE)]


def test_pooled_weights_frames_by_their_pairs_and_shapes_are_checked():
    a = {
        k: {"pairs": 1, "render": 10.0, "truth": 0.0, "error": 10.0} for k in ("seam", "outline", "interior")
    }
    b = {k: {"pairs": 3, "render": 2.0, "truth": 0.0, "error": 2.0} for k in ("seam", "outline", "interior")}
    empty = {"pairs": 0, "render": float("nan"), "truth": float("nan"), "error": float("nan")}
    out = pooled([{**a, "box": empty}, {**b, "box": empty}])
    assert out["seam"]["render"] == pytest.approx(4.0) and out["seam"]["pairs"] == 4
    assert out["box"]["pairs"] == 0 and np.isnan(out["box"]["render"])
    truth, alpha, labels = _scene(TORSO)
    with pytest.raises(ValueError, match="shapes differ"):
        edge_jumps(truth[:-1], truth, alpha, labels)


def test_the_renderer_gives_the_head_opacity_of_its_frame():
    torch.manual_seed(0)
    cfg = ModelConfig(head_lo=[-0.1, -0.1, -0.1], head_hi=[0.1, 0.1, 0.1])
    model = PortraitNeRF(cfg).eval()
    with torch.no_grad():
        for head in (model.coarse, model.fine):
            head.sigma_net[-1].bias[0] += 6.0  # dense everywhere in the box
        model.occupancy.mask.fill_(True)
    camera = Camera.from_fov(SIZE, SIZE, 40.0)
    pose = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1.0], np.float32)  # the box 1 m ahead, in mid-frame
    expression = np.zeros(model.input_dim, np.float32)
    renderer = Renderer(model, camera, np.zeros((SIZE, SIZE, 3), np.uint8))
    img, alpha = renderer.render_with_opacity(expression, pose, SIZE, SIZE)
    assert torch.equal(img, renderer.render_float(expression, pose, SIZE, SIZE))
    dirs, _ = pixel_rays(camera)
    origin, direction = to_canonical(dirs, torch.from_numpy(pose)[None])
    hit = intersect_box(origin, direction, model.head_lo, model.head_hi)[2].view(SIZE, SIZE)
    assert alpha.shape == (SIZE, SIZE)
    assert (alpha[~hit] == 0).all()  # no head drawn where the rays miss its box
    assert 0 < hit.sum() < SIZE * SIZE and (alpha[hit] > 0.5).float().mean() > 0.5
