"""A random NeRF head in front of a tiny camera, for the sender's analysis-by-synthesis tests."""

from __future__ import annotations

import numpy as np
import torch

from nerfvc.camera import Camera
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.renderer import Renderer

SIZE = 24
POSE = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1.0], np.float32)  # the head 1 unit in front


def random_head(seed: int = 0) -> Renderer:
    """A random head in front of a 24 px camera, dense enough to be seen, whose colour and shape follow the
    expression (random blend shapes and MLPs), over a black background."""
    torch.manual_seed(seed)
    cfg = ModelConfig(head_lo=[-0.2, -0.25, -0.2], head_hi=[0.2, 0.2, 0.2], torso_dims=2)
    cfg.fine.blend_res = 7
    cfg.n_coarse = cfg.n_fine = 8
    model = PortraitNeRF(cfg).eval()
    with torch.no_grad():
        for head in (model.coarse, model.fine):
            head.grid.table.normal_(0, 1.0)
            head.sigma_net[2].bias[0] += 2.0
            head.color_net[2].weight.mul_(8.0)  # colours spread over [0, 1], not all near grey
        model.fine.blend.normal_(0, 0.5)
        model.occupancy.mask.fill_(True)
    camera = Camera.from_fov(SIZE, SIZE, 40.0)
    return Renderer(model, camera, np.zeros((SIZE, SIZE, 3), np.uint8))
