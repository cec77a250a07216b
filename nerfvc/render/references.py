"""Enrollment reference frames: real texture for the rendered head.

The NeRF draws held-out expressions and poses with a softer, noisier texture than the camera shows (skin,
hair, glasses: what LPIPS, DISTS and the identity metric punish). A MODEL directory can carry ``count`` real
training frames chosen to cover the enrollment clip's poses and major expressions (``references.safetensors``,
JPEG-coded, with each frame's inputs and pose). For every rendered frame the renderer

1. takes the 3 references nearest to the frame's pose and major expression coefficients
   (:func:`reference_key`),
2. maps each head pixel's surface point (the fine pass's expected depth) through canonical head space into
   each reference's camera, shifts it by up to ~1 px (σ) where the reference's low band matches the render's
   better (:func:`align_offsets`: expression and tracking leave references a pixel or two off, and details
   that do not register blur) and samples the reference image there; a sample counts where the reference's
   own depth at that pixel agrees (the point is not hidden there),
3. blends the samples into the render where their low frequencies agree with the render's (so a mouth the
   reference holds open or shut, and other light, keep the render), their fine detail only as far as the
   render lacks it (a sharp render keeps its own): :func:`blend_references`.

The bitstream does not change: the references are part of the person's model, like its weights.
Measured in docs/nerf.md "Reference texture".
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from nerfvc.datasetdir import frame_path, training_split
from nerfvc.errors import ModelMismatchError
from nerfvc.field.cpp import load_kernel
from nerfvc.fsutil import atomic_path
from nerfvc.render.model import PortraitNeRF

REFERENCES_FILE = "references.safetensors"
# frames kept: on held-out 512² frames of d9 and bob, LPIPS improves from 16 to 32 to 64 frames and by at most
# 0.002 more with 128 or 256 (docs/nerf.md "Reference texture")
REFERENCE_COUNT = 64
REFERENCE_JPEG_QUALITY = 95  # with full-resolution colour (4:4:4)
NEAREST_REFERENCES = 3  # references blended per frame
MAJOR_EXPRESSION_DIMS = 8  # expression coefficients in the selection key (the PCA's major ones)
# low-frequency colour distance (RGB, [0,1]) at which a reference sample's weight falls to e^-1/2
AGREEMENT_SIGMA = 0.06
DEPTH_TOLERANCE = 0.02  # a sample is visible in its reference within this share of its depth
HEAD_ALPHA_MIN = 0.5  # pixels whose head opacity is below this keep the render
# the references' mean detail is scaled toward their mean detail energy by at most this gain (details that do
# not align cancel in a mean; docs/nerf.md "Detail energy kept")
DETAIL_GAIN_MAX = 1.7
# each reference is aligned to the render before it is blended (expression and tracking leave it a pixel or
# two off): shifts of up to ALIGN_STEPS steps of ALIGN_STEP·σ each way (σ = agreement_sigma_px), the one
# whose low band matches the render's best over a window of ALIGN_WINDOW·σ, searched on a grid of every
# ALIGN_STRIDE·σ-th pixel, smoothed there over ALIGN_SMOOTH·σ and interpolated to the head's pixels
# (docs/nerf.md "References aligned to the render", "The alignment made cheap")
ALIGN_STEPS = 1
ALIGN_STEP = 1.0
ALIGN_WINDOW = 2.0
ALIGN_SMOOTH = 2.0
ALIGN_STRIDE = 2.0
HIDDEN_COST = 0.05  # the match cost of a shift where the point is hidden in the reference


def reference_key(model: PortraitNeRF, inputs: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Selection key of frames: raw inputs (N,E+T) and poses (N,12) → (N,9+3+8): the rotation matrix (×3,
    so ~3× radians), the translation in training stds (×0.3) and the major expression coefficients in
    training stds (×0.3)."""
    expr_n, _ = model.split_input(inputs)
    rot = pose[:, :9] * 3.0
    trans = pose[:, 9:12] / model.pose_std[9:12].clamp(min=1e-6) * 0.3
    return torch.cat([rot, trans, expr_n[:, :MAJOR_EXPRESSION_DIMS] * 0.3], 1)


def farthest_points(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (≤ count,) of ``keys`` (N,D) chosen greedily, each the farthest from those chosen before,
    starting from the one nearest the mean."""
    first = int(((keys - keys.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    dist = ((keys - keys[first]) ** 2).sum(1)  # (N,)
    while len(chosen) < min(count, keys.shape[0]):
        j = int(dist.argmax())
        chosen.append(j)
        dist = torch.minimum(dist, ((keys - keys[j]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)


@dataclass
class ReferenceFrames:
    """``images`` (K,H,W,3) uint8 at the dataset's size, ``inputs`` (K,E+T) raw model inputs and ``poses``
    (K,12) of real training frames."""

    images: torch.Tensor
    inputs: torch.Tensor
    poses: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def from_dataset(
        cls, dataset_root: str | Path, model: PortraitNeRF, count: int = REFERENCE_COUNT
    ) -> ReferenceFrames:
        """``count`` valid training frames of a DATASET spread over its poses and major expressions
        (:func:`farthest_points` of :func:`reference_key`), as ``model`` (normalisation set) reads them."""
        split = training_split(dataset_root, model.cfg.torso_dims)
        keep = split.valid if split.valid is not None else np.ones(len(split.frames), bool)
        inputs = torch.from_numpy(split.inputs[keep])
        poses = torch.from_numpy(split.pose[keep])
        frames = split.frames[keep]
        with torch.no_grad():
            pick = farthest_points(reference_key(model, inputs, poses), count)
        images = [
            np.asarray(Image.open(frame_path(dataset_root, int(frames[i]))).convert("RGB")) for i in pick
        ]
        return cls(torch.from_numpy(np.stack(images)), inputs[pick].float(), poses[pick].float())

    def save(self, path: str | Path) -> None:
        """Write ``REFERENCES_FILE`` into the MODEL directory ``path`` (JPEG-coded images)."""
        blobs = []
        for img in self.images.numpy():
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=REFERENCE_JPEG_QUALITY, subsampling=0)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets = np.cumsum([0] + [b.size for b in blobs]).astype(np.int64)
        tensors = {
            "jpeg": torch.from_numpy(np.concatenate(blobs)),
            "jpeg_offsets": torch.from_numpy(offsets),
            "inputs": self.inputs.float().contiguous(),
            "poses": self.poses.float().contiguous(),
        }
        with atomic_path(Path(path) / REFERENCES_FILE) as tmp:
            save_file(tensors, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceFrames | None:
        """The MODEL directory's references, or None when it has none (models trained before them)."""
        file = Path(path) / REFERENCES_FILE
        if not file.exists():
            return None
        try:
            t = load_file(str(file))
            blob, off = t["jpeg"].numpy(), t["jpeg_offsets"].tolist()
            imgs = [
                np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
                for a, b in itertools.pairwise(off)
            ]
            refs = cls(torch.from_numpy(np.stack(imgs)), t["inputs"], t["poses"])
        except Exception as e:  # a damaged or foreign file: say which
            raise ModelMismatchError(f"{file}: not a nerfvc reference file ({e})") from e
        if not len(refs) == refs.inputs.shape[0] == refs.poses.shape[0]:
            raise ModelMismatchError(f"{file}: images, inputs and poses differ in count")
        return refs


def agreement_sigma_px(width: int, height: int) -> float:
    """The low-pass (px) that separates a ``width`` × ``height`` frame's low band from its detail: 1 px at
    256², 2 at 512² (the same share of the picture at every size)."""
    return max(width, height) / 256


def low_pass_radius(sigma: float) -> int:
    """Half-width r of :func:`low_pass`'s box filters (width 2r + 1 ≈ √(6σ² + 1), at least 3): its output
    at a pixel depends on the input within 2r pixels."""
    return max(3, round((6 * sigma * sigma + 1) ** 0.5) // 2 * 2 + 1) // 2


def low_pass(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (B,H,W,C) blurred about as a Gaussian of ``sigma`` px: two box filters of odd width
    k ≈ √(6σ² + 1) (variance (k² − 1)/6), edges replicated; shifted adds, several times faster here than a
    convolution or a pooling of the same size."""
    r = low_pass_radius(sigma)
    k = 2 * r + 1
    im = image.permute(0, 3, 1, 2)  # (B,C,H,W)
    h, w = im.shape[2], im.shape[3]
    for _ in range(2):
        p = F.pad(im, (r, r, r, r), mode="replicate")
        rows = p[:, :, :, :w].clone()  # (B,C,H+2r,W): sums of k neighbours along each row
        for i in range(1, k):
            rows += p[:, :, :, i : i + w]
        im = rows[:, :, :h].clone()
        for i in range(1, k):
            im += rows[:, :, i : i + h]
        im = im / (k * k)
    return im.permute(0, 2, 3, 1)


def project_to_reference(
    points_cam: torch.Tensor,
    pose: torch.Tensor,
    ref_pose: torch.Tensor,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-space points (P,3) of a frame with head pose ``pose`` (12,) → the same head points in a
    reference frame with pose ``ref_pose`` (12,): pixel coords u, v (P,) and camera depth z (P,).
    ``X_cam = R X_can + t`` for both (nerfvc.render.rays.to_canonical)."""
    rot, t = pose[:9].view(3, 3), pose[9:12]
    rot_r, t_r = ref_pose[:9].view(3, 3), ref_pose[9:12]
    canonical = (points_cam - t) @ rot  # Rᵀ(X − t), row-wise
    x = canonical @ rot_r.T + t_r  # (P,3)
    z = x[:, 2].clamp(min=1e-6)
    return fx * x[:, 0] / z + cx, fy * x[:, 1] / z + cy, x[:, 2]


class PreparedReference(NamedTuple):
    """A reference at one output size, cropped to its head: ``data`` (h,w,8) colour, low-passed colour, head
    depth (0 where there is no head) and detail energy (:func:`detail_energy`) of the pixels from column
    ``x0``, row ``y0``; ``pose`` (12,)."""

    data: torch.Tensor
    x0: int
    y0: int
    pose: torch.Tensor


def detail_energy(image: torch.Tensor, low: torch.Tensor, blur_sigma: float) -> torch.Tensor:
    """Local energy of an image's fine detail: |image − low|² (H,W,3) summed over colours, low-passed →
    (H,W)."""
    return low_pass(((image - low) ** 2).sum(-1, keepdim=True)[None], blur_sigma)[0, ..., 0]


def prepare_reference(
    image: torch.Tensor, head_depth: torch.Tensor, pose: torch.Tensor, blur_sigma: float
) -> PreparedReference:
    """A reference image (H,W,3) in [0,1] at the output size, its head depth (H,W) and pose (12,) → what
    :func:`blend_references` samples, cropped to the head's box (a margin of 2 px; the rest is never
    visible)."""
    low = low_pass(image[None], blur_sigma)[0]  # (H,W,3)
    energy = detail_energy(image, low, blur_sigma)  # (H,W)
    data = torch.cat([image, low, head_depth[..., None], energy[..., None]], -1)  # (H,W,8)
    ys, xs = (head_depth > 0).nonzero(as_tuple=True)
    if ys.numel() == 0:
        return PreparedReference(data[:1, :1] * 0, 0, 0, pose)
    y0, x0 = max(0, int(ys.min()) - 2), max(0, int(xs.min()) - 2)
    y1, x1 = int(ys.max()) + 3, int(xs.max()) + 3
    return PreparedReference(data[y0:y1, x0:x1].contiguous(), x0, y0, pose)


def _sample(ref: PreparedReference, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``ref.data`` at reference pixel positions u, v (P,) (bilinear; zeros outside the crop) → (P,8)."""
    ch, cw = ref.data.shape[:2]
    grid = torch.stack([(u - ref.x0) / cw * 2 - 1, (v - ref.y0) / ch * 2 - 1], -1).view(1, -1, 1, 2)
    return F.grid_sample(ref.data.permute(2, 0, 1)[None], grid, align_corners=False)[0, :, :, 0].T


def visible(sample: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """1 where a point at reference depth ``z`` (P,) is the surface the reference shows (its sampled head
    depth, channel 6 of ``sample`` (P,8), within ``DEPTH_TOLERANCE``), else 0."""
    return ((z - sample[:, 6]).abs() < DEPTH_TOLERANCE * z).to(z.dtype)


def align_stride(blur_sigma: float) -> int:
    """The alignment search grid's spacing in pixels: ``ALIGN_STRIDE``·σ (2 px at 256², 4 at 512²), ≥ 1."""
    return max(1, round(ALIGN_STRIDE * blur_sigma))


def align_offsets(
    ref: PreparedReference,
    u: torch.Tensor,
    v: torch.Tensor,
    z: torch.Tensor,
    low: torch.Tensor,
    crop_yx: tuple[torch.Tensor, torch.Tensor],
    crop_hw: tuple[int, int],
    blur_sigma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shift (du, dv) (P,) in reference pixels that aligns ``ref`` to the render at each head pixel.

    ``u, v, z`` (P,) are the head pixels' projections into the reference, ``low`` (P,3) the render's low band
    there, ``crop_yx`` their rows and columns in the render's crop of ``crop_hw``. On a grid of every
    :func:`align_stride`-th pixel of the crop each shift of a (2·ALIGN_STEPS + 1)² grid of step
    ``ALIGN_STEP``·σ costs the variance of e = low(render) − low(reference) over the head pixels of a window
    of ``ALIGN_WINDOW``·σ (mean |e|² − |mean e|², plus ``HIDDEN_COST`` where the point is hidden there: a
    colour offset does not pull the shift); the cheapest shifts are averaged over the grid's head pixels
    within ``ALIGN_SMOOTH``·σ and interpolated bilinearly to every head pixel.
    """
    ys, xs = crop_yx
    h, w = crop_hw
    st = align_stride(blur_sigma)
    hc, wc = (h + st - 1) // st, (w + st - 1) // st  # the search grid
    on_grid = ((ys % st) == 0) & ((xs % st) == 0)
    gi = on_grid.nonzero(as_tuple=True)[0]
    grid_cell = (ys[gi] // st) * wc + xs[gi] // st  # (G,) the grid pixels searched
    step = ALIGN_STEP * blur_sigma
    steps = torch.arange(-ALIGN_STEPS, ALIGN_STEPS + 1, dtype=u.dtype, device=u.device) * step
    oy, ox = (t.reshape(-1) for t in torch.meshgrid(steps, steps, indexing="ij"))  # (O,) row-major: dy, dx
    ug, vg, zg, lowg = u[gi], v[gi], z[gi], low[gi]
    n_off = ox.numel()
    # per shift: the squared difference and the difference (3), then the head indicator
    costs = torch.zeros(n_off, 4, hc * wc, dtype=u.dtype, device=u.device)
    for o in range(n_off):
        s = _sample(ref, ug + ox[o], vg + oy[o])
        e = lowg - s[:, 3:6]
        costs[o, 0, grid_cell] = (e**2).sum(1) + HIDDEN_COST * (1 - visible(s, zg))
        costs[o, 1:, grid_cell] = e.T
    ind = torch.zeros(hc * wc, dtype=u.dtype, device=u.device)
    ind[grid_cell] = 1.0
    r = ALIGN_WINDOW * blur_sigma / st
    costs = low_pass(costs.view(-1, hc, wc, 1), r).view(n_off, 4, hc * wc)
    norm = low_pass(ind.view(1, hc, wc, 1), r).view(hc * wc).clamp(min=1e-6)
    # the windowed variance of the difference: a colour offset between render and reference moves no shift
    best = (costs[:, 0] / norm - ((costs[:, 1:] / norm) ** 2).sum(1)).argmin(0)  # (hc·wc,)
    # the head grid pixels' shifts (and the indicator) smoothed on the grid, then bilinear at the head pixels
    shift = torch.stack([ox[best] * ind, oy[best] * ind, ind])  # (3,hc·wc)
    shift = low_pass(shift.view(3, hc, wc, 1), ALIGN_SMOOTH * blur_sigma / st).view(3, hc, wc)
    gy, gx = ys.to(u.dtype) / st, xs.to(u.dtype) / st
    y0, x0 = gy.floor().long(), gx.floor().long()
    fy, fx = gy - y0, gx - x0
    y1, x1 = (y0 + 1).clamp(max=hc - 1), (x0 + 1).clamp(max=wc - 1)
    top = shift[:, y0, x0] * (1 - fx) + shift[:, y0, x1] * fx
    bottom = shift[:, y1, x0] * (1 - fx) + shift[:, y1, x1] * fx
    at = top * (1 - fy) + bottom * fy  # (3,P)
    norm = at[2].clamp(min=1e-6)
    return at[0] / norm, at[1] / norm


def blend_references(
    image: torch.Tensor,
    head_alpha: torch.Tensor,
    points_cam: torch.Tensor,
    pose: torch.Tensor,
    refs: list[PreparedReference],
    intrinsics: tuple[float, float, float, float],
    blur_sigma: float,
) -> torch.Tensor:
    """:func:`blend_references_torch` by the fused C++ kernel (``nerfvc/field/references.cpp``: the alignment
    search, then two passes over the head's pixels) where it is built and the tensors are float32 on the CPU,
    else by torch."""
    ext = load_references_extension()
    if ext is None or image.device.type != "cpu" or image.dtype != torch.float32:
        return blend_references_torch(image, head_alpha, points_cam, pose, refs, intrinsics, blur_sigma)
    stride = align_stride(blur_sigma)
    return ext.blend_references_fused(
        image.contiguous(),
        head_alpha.float().contiguous(),
        points_cam.float().contiguous(),
        pose.float(),
        [r.data.float().contiguous() for r in refs],
        [r.x0 for r in refs],
        [r.y0 for r in refs],
        [r.pose.float() for r in refs],
        *intrinsics,
        low_pass_radius(blur_sigma),
        HEAD_ALPHA_MIN,
        AGREEMENT_SIGMA,
        DEPTH_TOLERANCE,
        DETAIL_GAIN_MAX,
        ALIGN_STEPS,
        ALIGN_STEP * blur_sigma,
        stride,
        low_pass_radius(ALIGN_WINDOW * blur_sigma / stride),
        low_pass_radius(ALIGN_SMOOTH * blur_sigma / stride),
        HIDDEN_COST,
        torch.get_num_threads(),
    )


def load_references_extension() -> ModuleType | None:
    """The blend's C++ kernel (built on first use, see :mod:`nerfvc.field.cpp`), or None."""
    return load_kernel("references")


def blend_references_torch(
    image: torch.Tensor,
    head_alpha: torch.Tensor,
    points_cam: torch.Tensor,
    pose: torch.Tensor,
    refs: list[PreparedReference],
    intrinsics: tuple[float, float, float, float],
    blur_sigma: float,
) -> torch.Tensor:
    """The render ``image`` (H,W,3) in [0,1] with reference texture blended into its head.

    ``head_alpha`` (H,W) is the head's opacity, ``points_cam`` (H,W,3) each pixel's head surface point in
    camera space (expected depth along its ray), ``pose`` (12,) the frame's head pose; ``refs`` the
    references prepared at this frame's size; ``intrinsics`` = (fx, fy, cx, cy) at this size.

    Each reference is sampled at the head pixels' projections shifted by :func:`align_offsets`. Two bands:
    each reference's low-passed colour weighs
    ``visible · exp(−|low(render) − low(sample)|² / 2σ²)`` (it agrees with the render: same expression,
    same light); its fine detail (colour − low-pass) weighs
    that times ``1 − E_render / E_sample`` (clamped to [0, 1]; E = :func:`detail_energy`), so detail is added
    only where the render lacks it (a sharp render keeps its own). Each band is the weighted mean over the
    references and replaces the render's band by ``m ·`` its largest weight, m = head_alpha where it is
    ≥ ``HEAD_ALPHA_MIN``. Details that do not align cancel in a mean, so the mean detail is scaled by
    √(low-passed mean energy of the references' details / low-passed energy of their mean), at most
    ``DETAIL_GAIN_MAX``.
    """
    h, w, _ = image.shape
    m = (head_alpha * (head_alpha >= HEAD_ALPHA_MIN)).reshape(-1)  # (H·W,)
    sel = m.nonzero(as_tuple=True)[0]  # head pixels (P,)
    if sel.numel() == 0 or not refs:
        return image
    pts = points_cam.reshape(-1, 3).index_select(0, sel)  # (P,3)
    # the render's low band and detail energy on the head's box only: they reach 4r pixels (low-passed
    # twice), so a box that much larger gives the head pixels exactly what the whole frame would
    ys, xs = sel // w, sel % w
    pad = 4 * low_pass_radius(blur_sigma) + 1
    y0, x0 = max(0, int(ys.min()) - pad), max(0, int(xs.min()) - pad)
    crop = image[y0 : int(ys.max()) + pad + 1, x0 : int(xs.max()) + pad + 1]  # (h',w',3)
    in_crop = (ys - y0) * crop.shape[1] + (xs - x0)  # (P,) the head pixels' rows in the crop
    low_img = low_pass(crop[None], blur_sigma)[0]
    low = low_img.reshape(-1, 3).index_select(0, in_crop)  # (P,3)
    own_energy = detail_energy(crop, low_img, blur_sigma).reshape(-1).index_select(0, in_crop)  # (P,)
    acc_low = torch.zeros(sel.numel(), 3, dtype=image.dtype, device=image.device)
    acc_detail = torch.zeros_like(acc_low)
    sum_low = torch.zeros(sel.numel(), dtype=image.dtype, device=image.device)
    sum_detail, max_low, max_detail, acc_energy = (torch.zeros_like(sum_low) for _ in range(4))
    m_sel = m.index_select(0, sel)
    for ref in refs:
        u, v, z = project_to_reference(pts, pose, ref.pose, *intrinsics)
        du, dv = align_offsets(
            ref, u, v, z, low, (ys - y0, xs - x0), (crop.shape[0], crop.shape[1]), blur_sigma
        )
        s = _sample(ref, u + du, v + dv)
        dist2 = ((low - s[:, 3:6]) ** 2).sum(1)
        vis = visible(s, z)
        w_low = torch.exp(-dist2 / (2 * AGREEMENT_SIGMA**2)) * vis
        # fine detail only as far as the render lacks it: none where it is as sharp as the reference
        w_detail = w_low * (1 - own_energy / s[:, 7].clamp(min=1e-8)).clamp(0, 1)
        detail = s[:, :3] - s[:, 3:6]  # (P,3)
        acc_low += w_low[:, None] * s[:, 3:6]
        acc_detail += w_detail[:, None] * detail
        acc_energy += w_detail * (detail**2).sum(1)
        sum_low += w_low
        sum_detail += w_detail
        max_low, max_detail = torch.maximum(max_low, w_low), torch.maximum(max_detail, w_detail)
    cur = image.reshape(-1, 3).index_select(0, sel)  # (P,3)
    low_mix = acc_low / sum_low.clamp(min=1e-6)[:, None]
    detail_mix = acc_detail / sum_detail.clamp(min=1e-6)[:, None]
    # the references' mean detail energy and the mean detail's, low-passed on the crop (zero off the head)
    energies = torch.zeros(2, crop.shape[0] * crop.shape[1], dtype=image.dtype, device=image.device)
    energies[0].index_copy_(0, in_crop, acc_energy / sum_detail.clamp(min=1e-6))
    energies[1].index_copy_(0, in_crop, (detail_mix**2).sum(1))
    energies = low_pass(energies.view(2, crop.shape[0], crop.shape[1], 1), blur_sigma).view(2, -1)
    energies = energies.index_select(1, in_crop)  # (2,P)
    gain = (energies[0] / energies[1].clamp(min=1e-8)).sqrt().clamp(max=DETAIL_GAIN_MAX)  # (P,)
    detail_mix = detail_mix * gain[:, None]
    new = (
        cur
        + (max_low * m_sel)[:, None] * (low_mix - low)
        + (max_detail * m_sel)[:, None] * (detail_mix - (cur - low))
    )
    out = image.reshape(-1, 3).clone()
    out.index_copy_(0, sel, new)
    return out.reshape(h, w, 3)
