"""Winks drawn by halves (``nerfvc.render.halves``): the mirror geometry of a face model, when a frame's
eyes differ enough to need it, the symmetric codes, the eye regions' pixel boxes, the renderer's
composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfvc.camera import Camera
from nerfvc.face.eyes import APERTURE_ASYMMETRY, EYE_CORNERS, EYE_LIDS
from nerfvc.face.mesh import NUM_LANDMARKS
from nerfvc.face.synthetic import LID, closing, symmetric_face
from nerfvc.render.halves import FaceHalves, load_face_halves
from nerfvc.render.renderer import Renderer


def code(basis: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """The expression (E,) of a landmark displacement (478,3) the basis spans."""
    return displacement.reshape(-1) @ basis


@pytest.fixture(scope="module")
def face() -> tuple[FaceHalves, np.ndarray, np.ndarray]:
    mean, basis = symmetric_face()
    return FaceHalves.from_shape(mean, basis), mean, basis


def test_the_mirror_map_pairs_the_eyes_and_is_an_involution(face):
    halves, _, _ = face
    for k in range(2):
        assert halves.mirror[EYE_LIDS["left"][k]] == EYE_LIDS["right"][k]
        assert halves.mirror[EYE_CORNERS["right"][k]] == EYE_CORNERS["left"][k]
    assert np.array_equal(halves.mirror[halves.mirror], np.arange(NUM_LANDMARKS))
    for side in ("left", "right"):  # each region holds its own eye and not the other one
        assert halves.region[side][list(EYE_LIDS[side])].min() == 1.0
        other = "right" if side == "left" else "left"
        assert halves.region[side][list(EYE_LIDS[other])].max() == 0.0
    assert halves.eyes.aperture == pytest.approx(2 * LID)


def test_a_blink_is_symmetric_and_a_wink_is_about_minus_one(face):
    halves, _, basis = face
    e = np.stack([code(basis, closing(s)) for s in [(), ("left", "right"), ("left",), ("right",)]])
    a = halves.eyes.asymmetry(e)
    np.testing.assert_allclose(a, [0.0, 0.0, -1.0, 1.0], atol=1e-9)
    half_wink = code(basis, closing(("left",), 0.5))  # one eye half shut: below the threshold
    assert abs(halves.eyes.asymmetry(half_wink[None])[0]) < APERTURE_ASYMMETRY
    assert halves.symmetric_codes(half_wink) is None
    assert halves.symmetric_codes(e[1]) is None  # a blink is drawn as it is


def test_each_symmetric_code_mirrors_one_eye_onto_the_other(face):
    halves, _, basis = face
    codes = halves.symmetric_codes(code(basis, closing(("left",))))
    assert codes is not None
    for side, c in codes.items():
        shape = halves.mean + (basis @ c).reshape(-1, 3)
        both = [np.linalg.norm(shape[u] - shape[lo]) for u, lo in EYE_LIDS.values()]
        expected = 0.0 if side == "left" else 2 * LID  # the left region shut, the right region open
        np.testing.assert_allclose(both, [expected, expected], atol=1e-9)


def test_the_eye_regions_boxes_lie_on_each_eye_and_fade_at_their_edges(face):
    halves, _, basis = face
    cam = Camera(400.0, 400.0, 64.0, 64.0, 128, 128)
    pose = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0.6], np.float64)
    boxes = halves.region_boxes(code(basis, closing(("left",))), pose, cam)
    assert set(boxes) == {"left", "right"}
    for side, box in boxes.items():
        y0, y1, x0, x1 = box.pixels(128, 128)
        u, v = cam.project(halves.mean[list(EYE_LIDS[side])] + pose[9:])[0]
        assert x0 < u < x1 and y0 < v < y1  # the eye is inside its box
        w = box.weights(128, 128)
        assert w.shape == (y1 - y0, x1 - x0) and w.max() == 1.0 and 0 <= w.min() < 0.2
    assert boxes["left"].x0 > boxes["right"].x0  # the subject's left eye is on the image's right
    # a head far to the side: the regions off the frame are left out
    assert halves.region_boxes(np.zeros(basis.shape[1]), pose + np.r_[np.zeros(9), 5.0, 0, 0], cam) == {}


def test_a_model_without_a_face_mesh_model_draws_no_halves(tiny_model):
    _, model_dir = tiny_model  # the synthetic dataset's face model holds only its head box
    assert load_face_halves(model_dir) is None
    assert Renderer.from_model_dir(model_dir).halves is None


def test_the_renderer_composes_each_region_from_its_symmetric_code(tiny_model):
    """Outside the eye regions a wink's frame is the plain render; inside, the plain render moved toward
    each region's own render by the region's weight; a symmetric frame is the plain render everywhere."""
    _, model_dir = tiny_model
    # every ray on its own (a box renders exactly as its part of the frame), no reference texture
    r = Renderer.from_model_dir(model_dir, reference=True, references=False)
    e = r.model.cfg.expression_dim
    mean, basis = symmetric_face(e)
    halves = FaceHalves.from_shape(mean, basis)
    size = 32
    camera = r.camera.scaled(size, size)
    pose = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0.2 * camera.fx / size], np.float32)  # 20 cm across
    extra = np.zeros(r.model.cfg.torso_dims, np.float32)
    wink = np.r_[code(basis, closing(("left",))), extra].astype(np.float32)
    blink = np.r_[code(basis, closing(("left", "right"))), extra].astype(np.float32)

    @torch.inference_mode()  # as the renderer runs
    def layers(x: np.ndarray) -> torch.Tensor:  # the frame's colour before any region is drawn, (H,W,3)
        inputs = r.model.within_training_range(torch.from_numpy(x)[None])
        return r._render_layers(inputs, torch.from_numpy(pose)[None], size, size).rgb.view(size, size, 3)

    boxes = halves.region_boxes(wink[:e], pose, camera)
    assert set(boxes) == {"left", "right"}
    codes = halves.symmetric_codes(wink[:e])
    assert codes is not None
    base = layers(wink)
    expected = base.clone()
    total = np.zeros((size, size))
    for b in boxes.values():
        y0, y1, x0, x1 = b.pixels(size, size)
        total[y0:y1, x0:x1] += b.weights(size, size)
    inside = np.zeros((size, size), bool)
    for side, b in boxes.items():
        y0, y1, x0, x1 = b.pixels(size, size)
        inside[y0:y1, x0:x1] = True
        x = wink.copy()
        x[:e] = codes[side]
        w = torch.from_numpy(b.weights(size, size) / np.maximum(total[y0:y1, x0:x1], 1.0)).float()[..., None]
        expected[y0:y1, x0:x1] += w * (layers(x)[y0:y1, x0:x1] - base[y0:y1, x0:x1])
    assert inside.mean() < 0.9  # the regions leave part of the frame out
    r.halves = halves
    drawn = r.render_float(wink, pose, size, size)
    torch.testing.assert_close(drawn, expected.clamp(0, 1), atol=1e-5, rtol=0)
    outside = torch.from_numpy(~inside)
    assert torch.equal(drawn[outside], base.clamp(0, 1)[outside])
    assert torch.equal(r.render_float(blink, pose, size, size), layers(blink).clamp(0, 1))  # no halves
