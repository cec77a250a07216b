"""End to end on a tiny synthetic scene with analytic ground truth: training quality, pose control,
resolution agnosticism, exact checkpoints, clear errors, and the two CLI commands."""

import argparse
import json
from dataclasses import replace

import av
import numpy as np
import pytest
import torch

from nerfvc.camera import Camera
from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.features import model_input, save_features
from nerfvc.field.encodings import HashGridConfig
from nerfvc.field.fields import HeadFieldConfig, field_settings, linears
from nerfvc.metrics import psnr
from nerfvc.render.fast import FastRenderConfig
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.render.renderer import Renderer, frame_rays
from nerfvc.train.checkpoint import load_checkpoint, save_checkpoint
from nerfvc.train.dataset import load_dataset
from nerfvc.train.synthetic import (
    frame_features,
    make_synthetic_dataset,
    render_gt,
    rotation,
    torso_shifts,
)
from nerfvc.train.trainer import (
    TrainConfig,
    coded_inputs,
    evaluate,
    frame_offsets,
    head_hull,
    mix_coded,
    noise_at,
    noisy_expression,
    train,
)

SIZE = 48


def tiny_model() -> ModelConfig:
    """A small model so the tests train in seconds."""
    fine = HeadFieldConfig(grid=HashGridConfig(levels=8, features=2, log2_table=12, base_res=8, max_res=96))
    return ModelConfig(fine=fine, n_coarse=16, n_fine=16, occupancy_res=32)


def tiny_train(iters: int) -> TrainConfig:
    return TrainConfig(
        iters=iters,
        batch_rays=1024,
        occupancy_warmup=100,
        eval_frames=-1,
        progress=False,
        checkpoint_seconds=1e9,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "ds"
    return make_synthetic_dataset(root, num_frames=30, size=SIZE, torso_motion=True)


def frame_inputs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic clip's model inputs (n,E+2) (expression, torso shift relative to frame 0), poses (n,12)
    and absolute torso sways (n,2) (for the ground truth)."""
    expr, pose = frame_features(n)
    sway = torso_shifts(n)
    return model_input(expr, sway - sway[0], 2), pose, sway


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    result = train(dataset, out, tiny_train(300), tiny_model())
    return out, result


def test_tiny_scene_trains_to_a_psnr_threshold(trained, dataset):
    out, result = trained
    assert result.steps == 300
    model = Renderer.from_model_dir(out).model
    seen = evaluate(model, load_dataset(dataset), np.array([0, 7, 14, 21]))
    print(result, seen)
    assert seen["psnr"] > 28.0, seen  # fits the training frames
    assert result.metrics["frames"] == 6
    assert result.metrics["psnr"] > 22.0, result.metrics  # held-out frames: unseen poses and expressions
    # the train-vs-test gap is reported: training frames (scored at the same size) fit better
    gap = result.metrics["generalisation_gap_db"]
    assert gap > 0 and result.metrics["train_psnr"] == pytest.approx(result.metrics["psnr"] + gap)


def _count_points(model: PortraitNeRF) -> list[int]:
    """Wrap every hash-grid read (``HashGrid.lookup``, which its forward and the frame renderer's torch path
    call) to add its number of points to the returned counter (the grid is read on its own only without the
    fused density kernel: callers set ``NERFVC_KERNEL=torch``)."""
    count = [0]
    for head in (model.coarse, model.fine):
        lookup = head.grid.lookup

        def counted(x, table, res, lookup=lookup):
            count[0] += len(x)
            return lookup(x, table, res)

        head.grid.lookup = counted  # type: ignore[method-assign]
    return count


def test_frame_renderer_matches_the_training_renderer_with_fewer_field_evaluations(trained, monkeypatch):
    monkeypatch.setenv("NERFVC_KERNEL", "torch")  # so the grid hooks see every point
    out, _ = trained
    fast = Renderer.from_model_dir(out)
    ref = Renderer.from_model_dir(out, reference=True)
    n_fast, n_ref = _count_points(fast.model), _count_points(ref.model)
    cam = Camera.from_dict(json.loads((out / "camera.json").read_text()))
    x, pose, sway = frame_inputs(30)
    for i in (26, 28):  # held-out frames
        a = torch.from_numpy(fast.render(x[i], pose[i], SIZE, SIZE)).float() / 255
        b = torch.from_numpy(ref.render(x[i], pose[i], SIZE, SIZE)).float() / 255
        gt = torch.from_numpy(render_gt(x[i, :79], pose[i], cam, torso=sway[i])[0]).float() / 255
        # this 300-step scene's spread over seeds 0-3, with and without the torso shift in the torso MLPs
        # (thirty-seventh session): 36.1-40.2 dB between the two, the frame renderer 0.1-0.5 dB further from
        # the truth; a real model's gap is in benchmarks/results/render.json (german: 0.07 dB)
        assert psnr(a, b) > 35.0
        assert psnr(a, gt) > psnr(b, gt) - 0.7
    assert 0 < n_fast[0] < 0.6 * n_ref[0], (n_fast, n_ref)


def test_frame_renderer_draws_the_same_frame_by_either_density_kernel(trained, monkeypatch):
    from nerfvc.field.fused import fused_density_available

    if not fused_density_available():
        pytest.skip("no C++ compiler for the fused kernel")
    out, _ = trained
    r = Renderer.from_model_dir(out)
    x, pose, _ = frame_inputs(30)
    frames = {}
    for kernel in ("fused", "torch"):
        monkeypatch.setenv("NERFVC_KERNEL", kernel)
        monkeypatch.setenv("NERFVC_PRECISION", "fp32")
        frames[kernel] = torch.from_numpy(r.render(x[26], pose[26], SIZE, SIZE)).float() / 255
    assert psnr(frames["fused"], frames["torch"]) > 45.0


def test_frame_renderer_places_fine_samples_by_the_proposal_fields(trained):
    """``FastRenderConfig.proposal``: "fine" marches the fine field in the coarse pass (the frame's own
    geometry), so a coarse field that sees nothing changes no pixel; "both" still finds the head through the
    fine field; "coarse" loses it. "auto" is "coarse" up to 256 px and "both" above."""
    out, _ = trained
    x, pose, _ = frame_inputs(30)
    intact, broken = Renderer.from_model_dir(out), Renderer.from_model_dir(out)
    with torch.no_grad():
        linears(broken.model.coarse.sigma_net)[-1].bias[0] = -30.0  # coarse density exp(-31): empty

    def frames(proposal: str) -> tuple[torch.Tensor, torch.Tensor]:
        intact.fast.proposal = broken.fast.proposal = proposal
        a, b = (r.render(x[26], pose[26], SIZE, SIZE) for r in (intact, broken))
        return torch.from_numpy(a).float() / 255, torch.from_numpy(b).float() / 255

    fine, fine_broken = frames("fine")
    assert torch.equal(fine_broken, fine)
    both, both_broken = frames("both")
    coarse, coarse_broken = frames("coarse")
    assert not torch.equal(both, coarse) and not torch.equal(both_broken, both)
    for a in (both, both_broken, coarse):
        assert psnr(a, fine) > 30.0  # every proposal with a field that sees the head draws it
    assert psnr(coarse_broken, coarse) < 25.0  # the head is gone
    cfg = FastRenderConfig()
    assert [cfg.proposal_for(s, s) for s in (128, 256, 257, 512)] == ["coarse", "coarse", "both", "both"]
    with pytest.raises(ValueError, match="proposal"):
        FastRenderConfig(proposal="none")


def test_frame_renderer_coarse_grid_and_torso_grid_follow_their_sizes(trained):
    out, _ = trained
    r = Renderer.from_model_dir(out)
    assert [r.fast.coarse_stride(s, s) for s in (64, 128, 256, 512, 1024)] == [2, 2, 4, 8, 16]
    x, pose, _ = frame_inputs(30)
    full = torch.from_numpy(r.render(x[25], pose[25], SIZE, SIZE)).float() / 255
    r.fast.torso_size = SIZE // 2  # the torso on a half-size grid, bilinearly upsampled
    half = torch.from_numpy(r.render(x[25], pose[25], SIZE, SIZE)).float() / 255
    assert not torch.equal(full, half)  # the upsampled path ran
    assert psnr(half, full) > 30.0


def test_the_torso_follows_the_sent_torso_shift(trained, dataset, tmp_path):
    out, _ = trained
    assert json.loads((out / "nerf.json").read_text())["model"]["torso_dims"] == 2
    cam = Camera.from_dict(json.loads((out / "camera.json").read_text()))
    x, pose, sway = frame_inputs(30)
    r = Renderer.from_model_dir(out)
    rows = slice(int(0.72 * SIZE), SIZE)  # the torso band
    gain = []
    for i in range(24, 30):  # held-out frames
        gt = torch.from_numpy(render_gt(x[i, :79], pose[i], cam, torso=sway[i])[0]).float()[rows] / 255
        moved = torch.from_numpy(r.render(x[i], pose[i], SIZE, SIZE)).float()[rows] / 255
        unmoved = x[i].copy()
        unmoved[79:] = 0  # the same frame with the body where it was in frame 0
        still_img = torch.from_numpy(r.render(unmoved, pose[i], SIZE, SIZE)).float()[rows] / 255
        gain.append(psnr(moved, gt) - psnr(still_img, gt))
    # every held-out frame's torso band is closer with the shift; the size of the gain depends on the training
    # step this machine measured fastest (AMD Zen 5: mean 1.86 dB with fp32 torch, 2.00 fp32 fused, 2.02 bf16
    # torch; the smallest frame's 0.77-0.82 dB), so the bounds leave room for all of them
    assert np.mean(gain) > 1.0 and min(gain) > 0.5, gain
    # the paper's torso (head pose only): the model's input is the expression alone
    still = tmp_path / "still"
    train(dataset, still, replace(tiny_train(2), torso_motion=False, eval_frames=0), tiny_model())
    assert Renderer.from_model_dir(still).expression_dim == 79


def test_rotating_the_head_pose_rotates_the_rendered_head(trained):
    out, _ = trained
    r = Renderer.from_model_dir(out)
    cam = Camera.from_dict(json.loads((out / "camera.json").read_text()))
    x, pose, sway = frame_inputs(30)
    base = pose[3].copy()
    turned = base.copy()
    turned[:9] = (rotation(0.25, 0.0) @ base[:9].reshape(3, 3)).reshape(-1)
    img = torch.from_numpy(r.render(x[3], turned, SIZE, SIZE)).float() / 255
    gt_turned = torch.from_numpy(render_gt(x[3, :79], turned, cam, torso=sway[3])[0]).float() / 255
    gt_base = torch.from_numpy(render_gt(x[3, :79], base, cam, torso=sway[3])[0]).float() / 255
    assert psnr(img, gt_turned) > 24.0
    assert psnr(img, gt_turned) > psnr(img, gt_base) + 3.0  # it moved the way the pose says


def test_double_size_render_downsampled_matches_the_single_size_render(trained):
    out, _ = trained
    r = Renderer.from_model_dir(out)
    x, pose, _ = frame_inputs(30)
    one = torch.from_numpy(r.render(x[25], pose[25], SIZE, SIZE)).float() / 255
    two = torch.from_numpy(r.render(x[25], pose[25], 2 * SIZE, 2 * SIZE)).float() / 255
    down = torch.nn.functional.avg_pool2d(two.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
    assert two.shape == (2 * SIZE, 2 * SIZE, 3)
    assert psnr(down, one) > 30.0


def test_checkpoint_roundtrips_bit_exactly_and_refuses_bad_ones(trained, tmp_path):
    torch.manual_seed(1)
    cfg = tiny_model()
    model = PortraitNeRF(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for p in model.parameters():  # give Adam some state
        p.grad = torch.randn_like(p)
    opt.step()
    save_checkpoint(tmp_path, model, opt, {"step": 7, "elapsed": 1.5, "dataset": "abc"})
    model2 = PortraitNeRF(cfg)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    state = load_checkpoint(tmp_path, model2, opt2, dataset_fingerprint="abc")
    assert state["step"] == 7
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    for p, q in zip(model.parameters(), model2.parameters()):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][k], opt2.state[q][k])
    with pytest.raises(ModelMismatchError, match="another dataset"):
        load_checkpoint(tmp_path, PortraitNeRF(cfg), dataset_fingerprint="xyz")
    with pytest.raises(ModelMismatchError, match="another model config"):
        load_checkpoint(tmp_path, PortraitNeRF(replace(cfg, consistency_dim=0)))
    data = bytearray((tmp_path / "checkpoint.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "checkpoint.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError, match="corrupt"):
        load_checkpoint(tmp_path, PortraitNeRF(cfg))


def test_resumed_training_equals_uninterrupted_training(dataset, tmp_path):
    a = tmp_path / "a"
    train(dataset, a, tiny_train(12), tiny_model())
    b = tmp_path / "b"
    train(dataset, b, replace(tiny_train(12), stop_at=6, eval_frames=0), tiny_model())  # "interrupted"
    train(dataset, b, replace(tiny_train(12), eval_frames=0), tiny_model())  # resumes at step 6
    wa = (a / "nerf.safetensors").read_bytes()
    assert wa == (b / "nerf.safetensors").read_bytes()


def test_frame_codes_train_the_training_rows_only_and_resume_exactly(dataset, tmp_path):
    cfg = replace(tiny_train(8), frame_codes=True, eval_frames=0)
    a = tmp_path / "a"
    train(dataset, a, cfg, tiny_model())
    b = tmp_path / "b"
    train(dataset, b, replace(cfg, stop_at=4), tiny_model())  # "interrupted"
    train(dataset, b, cfg, tiny_model())  # resumes at step 4, frame codes and their Adam state included
    assert (a / "nerf.safetensors").read_bytes() == (b / "nerf.safetensors").read_bytes()
    from safetensors.torch import load_file

    codes = load_file(str(a / ".train" / "checkpoint.safetensors"))["frame_codes"]  # (F,K)
    assert torch.equal(codes, load_file(str(b / ".train" / "checkpoint.safetensors"))["frame_codes"])
    ds = load_dataset(dataset)
    assert codes.shape == (ds.num_frames, tiny_model().consistency_dim)
    assert (codes[ds.train_idx].abs().sum(1) > 0).all()  # every training frame's code was trained
    assert not codes[ds.test_idx].any()  # held-out frames have none: the model is drawn with zero
    with pytest.raises(ModelMismatchError, match="other frame codes"):  # resumed without them
        train(dataset, b, replace(cfg, frame_codes=False, iters=12), tiny_model())
    with pytest.raises(InputError, match="consistency"):
        train(dataset, tmp_path / "c", cfg, replace(tiny_model(), consistency_dim=0))
    assert not (tmp_path / "c").exists()


def test_frame_offsets_are_zero_mean_over_the_training_frames():
    codes = torch.randn(10, 4)
    train_frames = torch.arange(8)
    offsets = frame_offsets(codes, train_frames, train_frames)  # (8,4)
    assert torch.allclose(offsets.mean(0), torch.zeros(4), atol=1e-6)
    assert torch.allclose(offsets[1] - offsets[0], codes[1] - codes[0])
    assert torch.allclose(
        frame_offsets(codes, torch.tensor([9]), train_frames)[0], codes[9] - codes[:8].mean(0)
    )


def test_a_frame_code_changes_colour_not_the_head_density():
    torch.manual_seed(0)
    model = PortraitNeRF(tiny_model()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # a model whose codes all matter
    n = 64
    dirs = torch.nn.functional.normalize(torch.randn(n, 3) * 0.1 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    uv = torch.rand(n, 2)
    inputs = torch.randn(1, model.input_dim) * 0.01
    pose = torch.from_numpy(frame_features(1)[1]).float()  # (1,12): the synthetic head in view
    bg = torch.rand(n, 3)
    with torch.no_grad(), field_settings(torch.float32, "torch"):  # the same arithmetic on every machine
        plain = model.render_rays(dirs, uv, inputs, pose, bg, samples=(8, 8))
        zero = model.render_rays(dirs, uv, inputs, pose, bg, samples=(8, 8), frame_code=torch.zeros(n, 8))
        moved = model.render_rays(dirs, uv, inputs, pose, bg, samples=(8, 8), frame_code=torch.randn(n, 8))
    assert plain["head_alpha"].max() > 0.1  # the rays see the head
    for k in ("rgb", "head_alpha", "torso_alpha"):
        assert torch.allclose(plain[k], zero[k], atol=1e-5), k
    assert torch.equal(plain["head_alpha"], moved["head_alpha"])  # the code enters colour only
    assert (plain["head_rgb"] - moved["head_rgb"]).abs().max() > 1e-2


def test_corrupt_model_dir_and_bad_inputs_give_clear_errors(trained, tmp_path):
    out, _ = trained
    r = Renderer.from_model_dir(out)
    with pytest.raises(InputError, match="expects 81"):
        r.render(np.zeros(5), np.zeros(12), 8, 8)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "nerf.safetensors").read_bytes())
    data[-3] ^= 0x01
    (bad / "nerf.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError, match=r"nerf\.safetensors was modified"):
        Renderer.from_model_dir(bad)


def test_cli_train_then_render_an_mp4_at_another_size(dataset, tmp_path):
    from nerfvc.render import commands as render_cmd
    from nerfvc.train import commands as train_cmd

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    train_cmd.register(sub)
    render_cmd.register(sub)
    model = tmp_path / "model"
    argv = ["train", str(dataset), "-o", str(model), "--iters", "3", "--eval-frames", "1", "--blend-res", "7"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert (model / "model.json").exists() and (model / "face_model.json").exists()
    assert json.loads((model / "nerf.json").read_text())["model"]["fine"]["blend_res"] == 7
    expr, pose = frame_features(4)
    save_features(tmp_path / "f.npz", expression=expr, pose=pose, torso=torso_shifts(4))
    video = tmp_path / "out.mp4"
    feats = str(tmp_path / "f.npz")

    def render(samples: str) -> list[np.ndarray]:
        argv = ["render", str(model), "--features", feats, "--size", "64x40", "--samples", samples]
        args = parser.parse_args([*argv, "-o", str(video)])
        assert args.func(args) == 0
        with av.open(str(video)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    frames = render("8,8")
    assert len(frames) == 4 and frames[0].shape == (40, 64, 3)
    assert not np.array_equal(render("2,2")[0], frames[0])  # --samples reaches the renderer
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["render", str(model), "--features", feats, "--samples", "8", "-o", str(video)])
    assert exc.value.code == 2


def test_the_head_mask_hull_prunes_empty_space_and_keeps_the_head(dataset):
    ds = load_dataset(dataset)
    hull = head_hull(ds, ds.head_lo, ds.head_hi, 32)
    assert hull is not None and hull.shape == (32, 32, 32)
    assert 0.02 < hull.float().mean() < 0.85  # the sphere fills its box: the corners are carved
    assert not hull[
        [0, 0, 0, 0, -1, -1, -1, -1], [0, 0, -1, -1, 0, 0, -1, -1], [0, -1, 0, -1, 0, -1, 0, -1]
    ].any()
    # every head-mask pixel of a training frame still sees some kept cell along its ray
    from nerfvc.render.rays import intersect_box, pixel_dirs, to_canonical
    from nerfvc.render.samplers import OccupancyGrid

    grid = OccupancyGrid(32)
    grid.set_prior(hull)
    f = int(ds.train_idx[3])
    y, x = torch.nonzero(ds.masks[f] == 2, as_tuple=True)
    dirs, _ = pixel_dirs(ds.camera, x.float() + 0.5, y.float() + 0.5)
    o, d = to_canonical(dirs, ds.pose[f : f + 1])
    lo, hi = torch.tensor(ds.head_lo), torch.tensor(ds.head_hi)
    t0, t1, hit = intersect_box(o, d, lo, hi)
    t = t0[:, None] + (t1 - t0)[:, None] * torch.linspace(0, 1, 64)  # (R,64)
    pts = ((o[:, None] + d[:, None] * t[..., None]) - lo) / (hi - lo)
    assert grid.query(pts.clamp(0, 1))[hit].any(1).float().mean() > 0.99
    # no head in any frame: no prior, nothing carved
    ds.masks[:] = 0
    assert head_hull(ds, ds.head_lo, ds.head_hi, 32) is None


def test_occupancy_updates_never_reopen_cells_the_prior_ruled_out():
    from nerfvc.render.samplers import OccupancyGrid

    grid = OccupancyGrid(8)
    prior = torch.zeros(8, 8, 8, dtype=torch.bool)
    prior[2:5, 2:5, 2:5] = True
    grid.set_prior(prior)
    assert torch.equal(grid.mask, prior)
    grid.update(torch.full((512,), 10.0), threshold=1.0)  # the field says: dense everywhere
    assert torch.equal(grid.mask, prior)


def test_scoring_stops_at_its_deadline_after_one_frame(trained, dataset):
    import time

    out, _ = trained
    model = Renderer.from_model_dir(out).model
    ds = load_dataset(dataset)
    late = evaluate(model, ds, np.array([24, 25, 26]), deadline=time.perf_counter() - 1)
    assert late["frames"] == 1
    assert evaluate(model, ds, np.array([24, 25, 26]), deadline=None)["frames"] == 3


def test_sigterm_checkpoints_instead_of_dying(dataset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m"
    code = (
        "from dataclasses import replace; from tests.train.test_train import tiny_model, tiny_train; "
        "from nerfvc.train.trainer import train; "
        f"train({str(dataset)!r}, {str(out)!r}, replace(tiny_train(100000), checkpoint_seconds=0.5), "
        "tiny_model())"
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd(), NERFVC_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    ckpt = out / ".train" / "checkpoint.json"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the first periodic checkpoint: training is under way
    first = json.loads(ckpt.read_text())["step"]
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    assert code not in (0, -signal.SIGTERM), code  # handled (KeyboardInterrupt), not killed outright
    assert json.loads(ckpt.read_text())["step"] >= first > 0


def test_patch_sampler_returns_one_square_block_over_the_head(dataset):
    """A perceptual step's rays are one contiguous size×size block of a training frame, centred in its
    head box, in row-major order (what the LPIPS term reshapes them to)."""
    from nerfvc.train.trainer import RaySampler

    ds = load_dataset(dataset)
    sampler = RaySampler(ds, 0.7)
    torch.manual_seed(0)
    for _ in range(5):
        b = sampler.patch(16)
        rgb = (b["rgb"] * 255).round().to(torch.uint8).reshape(16, 16, 3)
        hits = [
            (int(f), y, x)
            for f in ds.train_idx
            for y in range(SIZE - 15)
            for x in range(SIZE - 15)
            if torch.equal(ds.frames[f, y : y + 16, x : x + 16], rgb)
        ]
        assert hits, "the patch is not a block of any training frame"
        f, y, x = hits[0]
        assert (ds.masks[f, y : y + 16, x : x + 16] == 2).any()  # over the head


def test_perceptual_loss_is_zero_for_the_truth_and_pulls_a_blurred_patch_towards_it():
    from nerfvc.train.trainer import perceptual_loss

    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.random((32, 32, 3), dtype=np.float32))
    blur = torch.nn.functional.avg_pool2d(truth.permute(2, 0, 1)[None], 5, 1, 2)[0].permute(1, 2, 0)
    blur = blur.reshape(-1, 3).clone().requires_grad_(True)
    assert perceptual_loss(truth.reshape(-1, 3), truth.reshape(-1, 3), 32).item() < 1e-6
    loss = perceptual_loss(blur, truth.reshape(-1, 3), 32)
    loss.backward()
    assert loss.item() > 0.05 and blur.grad is not None
    stepped = (blur - 0.5 * blur.grad / blur.grad.abs().max()).detach()
    assert perceptual_loss(stepped, truth.reshape(-1, 3), 32).item() < loss.item()


def test_training_with_the_perceptual_term_expression_noise_and_coded_inputs_runs(dataset, tmp_path):
    cfg = replace(
        tiny_train(6),
        perceptual_weight=0.1,
        perceptual_from=0.0,
        patch_size=16,
        expression_noise=0.3,
        coded_share=0.5,
    )
    result = train(dataset, tmp_path / "m", cfg, tiny_model())
    assert result.steps == 6 and np.isfinite(result.metrics["psnr"])
    for bad in (dict(coded_kbps="fast"), dict(coded_kbps="1,-2"), dict(coded_share=1.5)):
        with pytest.raises(InputError, match="coded"):
            train(dataset, tmp_path / "bad", replace(cfg, **bad), tiny_model())
    assert not (tmp_path / "bad").exists()


def test_coded_inputs_are_what_the_shipped_codec_decodes(trained, dataset):
    from nerfvc.codec import CODEC_FILE, CodecTables
    from nerfvc.codec.roundtrip import coded_features
    from nerfvc.datasetdir import dataset_split, read_manifest

    ds = load_dataset(dataset, frames=False)
    rates = [0.8, 3.0]
    coded = coded_inputs(ds, rates)  # (2,F,D)
    manifest = read_manifest(ds.root)
    n = dataset_split(manifest)[0][1]
    tables = CodecTables.load(trained[0] / CODEC_FILE)  # what the receiver of the trained model decodes with
    for k, rate in enumerate(rates):
        sent, _ = coded_features(
            tables, ds.expression[:n].numpy(), ds.pose[:n].numpy(), rate, manifest["fps"]
        )
        np.testing.assert_allclose(coded[k, :n].numpy(), sent, atol=1e-6)
    assert torch.equal(coded[:, n:], ds.expression[n:].expand(2, -1, -1))  # held-out frames: raw, never drawn
    err = (coded[:, :n] - ds.expression[:n]).abs().mean((1, 2))
    assert err[0] > err[1] > 0  # the coarser rate is further from the raw fits; neither is exact


def test_mix_coded_gives_a_share_of_the_rays_their_frames_coded_inputs():
    inputs = torch.zeros(4000, 3)
    coded = torch.arange(1, 2 * 5 * 3 + 1, dtype=torch.float32).reshape(2, 5, 3)  # (K,F,D), all non-zero
    frames = torch.randint(0, 5, (4000,))
    assert torch.equal(mix_coded(inputs, coded, frames, 0.0), inputs)
    every = mix_coded(inputs, coded, frames, 1.0)
    from_rate = [(every == coded[k, frames]).all(1) for k in range(2)]
    assert (from_rate[0] | from_rate[1]).all() and from_rate[0].float().mean().item() == pytest.approx(
        0.5, abs=0.05
    )
    half = mix_coded(inputs, coded, frames, 0.3)
    taken = half.abs().sum(1) > 0
    assert taken.float().mean().item() == pytest.approx(0.3, abs=0.04)
    assert (
        (half[taken] == coded[0, frames[taken]]).all(1) | (half[taken] == coded[1, frames[taken]]).all(1)
    ).all()


def test_error_map_sampling_follows_the_recorded_error(dataset):
    """With an error map, the error-driven share of a batch goes where the recorded errors are large, and
    every ray's ``cell`` is the map cell of its frame and pixel."""
    from nerfvc.train.trainer import RaySampler

    ds = load_dataset(dataset)
    c = 4
    sampler = RaySampler(ds, 0.7, error_frac=0.5, error_cells=c)
    torch.manual_seed(0)
    b = sampler.sample(512)
    k = torch.searchsorted(torch.from_numpy(ds.train_idx), (b["cell"] // (c * c)))  # train position
    y, x = (b["cell"] // c) % c, b["cell"] % c
    for i in range(0, 512, 37):  # the cell holds the ray's pixel: its colour is that frame's at a pixel there
        f = int(ds.train_idx[int(b["cell"][i]) // (c * c)])
        block = ds.frames[
            f, y[i] * SIZE // c : (y[i] + 1) * SIZE // c, x[i] * SIZE // c : (x[i] + 1) * SIZE // c
        ]
        rgb = (b["rgb"][i] * 255).round().to(torch.uint8)
        assert (block == rgb).all(-1).any(), "the ray's colour is not in its cell"
    assert (k < len(ds.train_idx)).all()
    hot = int(b["cell"][0])
    cells = torch.arange(len(ds.train_idx) * c * c)
    err = torch.where(cells == hot, 1.0, 1e-4)
    for _ in range(100):  # the running mean converges to the recorded errors (0.9**100 of the start left)
        sampler.record(cells, err)
    share = (sampler.sample(2000)["cell"] == hot).float().mean()
    assert share > 0.4  # about the error-driven half; a uniform draw puts 1 in n_train·c² there
    assert RaySampler(ds, 0.7).error is None and "cell" in RaySampler(ds, 0.7).sample(8)


def test_face_boxes_are_the_landmarks_bounding_boxes_at_the_loaded_size(dataset, tmp_path):
    import shutil

    from nerfvc.datasetdir import features_path, read_features

    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    feats = read_features(root)
    n = len(feats["pose"])
    lm = np.zeros((n, 478, 3), np.float32)
    lm[:, :, 0] = np.linspace(10, 30, 478)  # u (x) from 10 to 30 px
    lm[:, :, 1] = np.linspace(8, 40, 478)[::-1] + np.arange(n)[:, None] % 2  # v (y) from 8 (9) to 40 (41)
    save_features(features_path(root), **{**feats, "landmarks": lm})
    full, half = load_dataset(root), load_dataset(root, SIZE // 2)
    assert full.face_boxes is not None and half.face_boxes is not None
    np.testing.assert_allclose(full.face_boxes[0], [8, 40, 10, 30])  # y0, y1, x0, x1
    np.testing.assert_allclose(full.face_boxes[1], [9, 41, 10, 30])
    np.testing.assert_allclose(half.face_boxes, full.face_boxes / 2, rtol=1e-6)


def test_face_share_of_a_batch_falls_inside_each_frames_face_box(dataset):
    """With ``face_frac``, that share of the rays is drawn inside the ray's own frame's face box (the rest as
    before); a dataset without face boxes is refused."""
    from nerfvc.train.trainer import RaySampler

    ds = load_dataset(dataset)
    n, h, w = ds.masks.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # each pixel's colour is its (y, x)
    frames = torch.stack([yy, xx, torch.zeros_like(yy)], -1).to(torch.uint8).expand(n, h, w, 3)
    boxes = torch.tensor([4.0, 12.0, 20.0, 30.0]).repeat(n, 1) + (torch.arange(n) % 3)[:, None] * 5  # (N,4)
    ds = replace(ds, frames=frames, face_boxes=boxes)

    def inside(face_frac: float) -> torch.Tensor:
        torch.manual_seed(0)
        b = RaySampler(ds, 0.7, face_frac=face_frac).sample(4000)
        y, x, box = (b["rgb"][:, 0] * 255).round(), (b["rgb"][:, 1] * 255).round(), boxes[b["frame"]]
        return (y >= box[:, 0]) & (y < box[:, 1]) & (x >= box[:, 2]) & (x < box[:, 3])

    assert inside(1.0).all()
    area = (8 * 10) / (h * w)  # the box's share of the frame
    assert inside(0.0).float().mean() < 3 * area  # about its area's share (more: the person box)
    assert 0.45 < inside(0.5).float().mean() < 0.5 + 3 * area
    with pytest.raises(InputError, match="no landmarks"):
        RaySampler(replace(ds, face_boxes=None), 0.7, face_frac=0.3)


def test_skipping_the_background_leaves_the_frame_unchanged(trained, monkeypatch):
    """The frame renderer evaluates the torso only where its coarse grid saw it: fewer torso rows, the same
    frame (to within rounding) as evaluating it at every pixel the head lets through."""
    from nerfvc.field.frame import FrameTorso

    out, _ = trained
    r = Renderer.from_model_dir(out, references=False)  # only this frame's torso rows are counted
    x, pose, _ = frame_inputs(30)
    rows: list[int] = []
    call = FrameTorso.rgba
    monkeypatch.setattr(FrameTorso, "rgba", lambda self, uv: (rows.append(len(uv)), call(self, uv))[1])
    skipped = r.render(x[26], pose[26], SIZE, SIZE)
    n_skipped, rows[:] = sum(rows), []
    r.fast.skip_background = False
    full = r.render(x[26], pose[26], SIZE, SIZE)
    assert psnr(skipped, full) > 50.0
    assert n_skipped < 0.9 * sum(rows), (n_skipped, sum(rows))


def test_expression_noise_jitters_the_expression_by_its_std_and_leaves_the_torso_shift():
    model = PortraitNeRF(ModelConfig(expression_dim=4, torso_dims=2))
    model.expr_std.copy_(torch.tensor([1.0, 2.0, 0.5, 4.0]))
    inputs = torch.arange(6, dtype=torch.float32).repeat(20000, 1)  # (R,4+2)
    assert noisy_expression(model, inputs, 0.0) is inputs
    out = noisy_expression(model, inputs, 0.3)
    assert torch.equal(out[:, 4:], inputs[:, 4:])
    jitter = out[:, :4] - inputs[:, :4]
    assert torch.allclose(jitter.mean(0), torch.zeros(4), atol=0.03 * 4)
    assert torch.allclose(jitter.std(0), 0.3 * model.expr_std, rtol=0.05)
    # normalised, the jitter has the same spread in every dimension
    expr_n, _ = model.split_input(out)
    assert torch.allclose(expr_n.std(0), torch.full((4,), 0.3), rtol=0.05)


def test_global_expression_scale_keeps_the_minor_components_small():
    model = PortraitNeRF(ModelConfig(expression_dim=3))
    expr = torch.randn(500, 3) * torch.tensor([0.02, 0.005, 0.0004]) + torch.tensor([1.0, 2.0, 3.0])
    pose = torch.randn(500, 12)
    model.set_normalisation(expr, pose)
    per_dim = model.split_input(expr)[0].std(0)
    floored = expr[:, 2].std() / 1e-3  # ~0.4: the smallest spread is divided by the 1e-3 floor
    assert torch.allclose(per_dim, torch.stack([torch.tensor(1.0), torch.tensor(1.0), floored]), rtol=1e-3)
    model.set_normalisation(expr, pose, "global")
    expr_n = model.split_input(expr)[0]
    assert torch.allclose(expr_n.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(expr_n.std(0), torch.tensor([1.0, 0.25, 0.02]), rtol=0.15)
    with pytest.raises(ValueError, match="expression_scale"):
        model.set_normalisation(expr, pose, "pca")


def test_decayed_expression_noise_falls_linearly_to_zero():
    flat = TrainConfig(expression_noise=0.3)
    decayed = TrainConfig(expression_noise=0.3, expression_noise_decay=True)
    assert [noise_at(flat, p) for p in (0.0, 0.5, 1.0)] == [0.3, 0.3, 0.3]
    assert [noise_at(decayed, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.3, 0.15, 0.0])


def test_the_distortion_term_concentrates_each_rays_weight(dataset, tmp_path):
    """Trained alike with and without mip-NeRF 360's distortion loss, the model trained with it spreads its
    rays' weights less along the ray (its own distortion on training frames is lower)."""
    ds = load_dataset(dataset)
    measured = []
    for weight in (0.0, 0.2):
        out = tmp_path / f"m{weight}"
        train(dataset, out, replace(tiny_train(60), distortion_weight=weight, eval_frames=0), tiny_model())
        renderer = Renderer.from_model_dir(out)
        model = renderer.model
        torch.manual_seed(0)  # the training renderer jitters its samples
        dirs, uv, bg = frame_rays(renderer.camera, renderer.background, SIZE, SIZE, "cpu")
        with torch.no_grad():
            outs = [
                model.render_rays(
                    dirs, uv, ds.expression[f][None], ds.pose[f][None], bg, train=True, distortion_loss=True
                )
                for f in ds.train_idx[:4]
            ]
        d = [o["distortion"] for o in outs]
        measured.append(float(torch.stack(d).mean()))
    assert measured[1] < 0.8 * measured[0], measured


def test_grid_decay_is_the_per_level_mean_square_and_shrinks_the_tables(dataset, tmp_path):
    """``PortraitNeRF.grid_decay`` is Σ over both head tables' levels of the level's mean squared entry; a
    model trained alike with it (``--grid-decay``) ends with smaller head tables than one trained without."""
    model = PortraitNeRF(tiny_model())
    want = sum(
        float((f.grid.table[level] ** 2).mean())
        for f in (model.coarse, model.fine)
        for level in range(f.grid.table.shape[0])
    )
    assert float(model.grid_decay()) == pytest.approx(want, rel=1e-5)
    decays = []
    for weight in (0.0, 1.0):
        out = tmp_path / f"m{weight}"
        train(dataset, out, replace(tiny_train(12), grid_decay=weight, eval_frames=0), tiny_model())
        decays.append(float(Renderer.from_model_dir(out).model.grid_decay()))
    assert decays[1] < 0.5 * decays[0], decays


def test_blend_smoothness_is_the_grids_neighbour_difference_and_smooths_them(dataset, tmp_path):
    """``PortraitNeRF.blend_roughness`` is the mean squared difference of neighbouring blend-shape vertices
    along each axis (a ramp of slope 1 along one axis: 1); a model trained alike with ``--blend-smoothness``
    ends with smoother blend shapes than one trained without."""
    cfg = tiny_model()
    cfg = replace(cfg, fine=replace(cfg.fine, blend_res=7))
    model = PortraitNeRF(cfg)
    assert float(model.blend_roughness().detach()) == 0.0  # the grids start at zero
    with torch.no_grad():
        ramp = torch.arange(8.0).view(8, 1, 1, 1, 1).expand(8, 8, 8, *model.fine.blend.shape[1:])
        model.fine.blend.copy_(ramp.reshape(model.fine.blend.shape))
    assert float(model.blend_roughness().detach()) == pytest.approx(1.0)
    rough = []
    for weight in (0.0, 10.0):
        out = tmp_path / f"m{weight}"
        train(dataset, out, replace(tiny_train(12), blend_smoothness=weight, eval_frames=0), cfg)
        rough.append(float(Renderer.from_model_dir(out).model.blend_roughness().detach()))
    assert 0 < rough[1] < 0.5 * rough[0], rough


def test_level_anneal_holds_the_finest_hash_levels_back_and_ends_with_all_open(dataset, tmp_path):
    """``--level-anneal 1``: the fine head's finest level moves less from its initial values than without it
    (it opens only at the end), its coarsest alike; the exported model reads every level."""
    init = PortraitNeRF(tiny_model()).fine.grid.table.detach().clone()  # the trainer's seed-0 init
    moved = []
    for share in (0.0, 1.0):
        out = tmp_path / f"m{share}"
        train(dataset, out, replace(tiny_train(12), level_anneal=share, eval_frames=0), tiny_model())
        model = Renderer.from_model_dir(out).model
        assert model.fine.level_weights is None
        moved.append((model.fine.grid.table.detach() - init).abs().mean(dim=(1, 2)))  # (L,)
    assert moved[1][-1] < 0.5 * moved[0][-1], moved
    assert moved[1][0] > 0.5 * moved[0][0], moved


def test_the_seam_band_lies_along_the_head_torso_boundary_of_training_frames(dataset):
    from scipy.ndimage import distance_transform_edt

    from nerfvc.train.trainer import RaySampler, head_torso_band

    ds = load_dataset(dataset)
    band = head_torso_band(ds, 2 / SIZE)  # 2 px
    assert not band[torch.from_numpy(ds.test_idx)].any()  # held-out frames are never trained on
    for f in ds.train_idx[:5]:
        m, b = ds.masks[f].numpy(), band[f].numpy()
        head, torso = m == 2, m == 1
        assert b.any() and not (b & (m == 0)).any()
        # exactly the head pixels within 2 px of a torso pixel, and the torso pixels as near the head
        near_torso, near_head = distance_transform_edt(~torso) <= 2, distance_transform_edt(~head) <= 2
        np.testing.assert_array_equal(b, (head & near_torso) | (torso & near_head))
    batch = RaySampler(ds, 0.7, seam_band=2 / SIZE).sample(4096)
    assert batch["seam"].any() and not batch["seam"].all()
    assert "seam" not in RaySampler(ds, 0.7).sample(8)


def test_the_head_opacity_is_free_inside_the_seam_band_and_held_to_the_mask_outside():
    from nerfvc.train.trainer import compute_loss

    n = 6
    label = torch.tensor([2, 2, 1, 1, 0, 0])
    out = {
        "rgb": torch.zeros(n, 3),
        "rgb_coarse": torch.zeros(n, 3),
        "head_alpha": torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0]),  # wrong on rays 0 and 2
        "head_alpha_coarse": torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0]),
        "torso_alpha": torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
    }
    base = {"rgb": torch.zeros(n, 3), "label": label}
    cfg = TrainConfig(mask_weight=1.0)
    held, _ = compute_loss(out, base, cfg)
    assert held.item() == pytest.approx(2 * 2 / n)  # two wrong rays, fine and coarse
    free, _ = compute_loss(out, {**base, "seam": torch.tensor([True, False, True, False, False, False])}, cfg)
    assert free.item() == pytest.approx(0.0)
    half, _ = compute_loss(
        out, {**base, "seam": torch.tensor([True, False, False, False, False, False])}, cfg
    )
    assert half.item() == pytest.approx(held.item() / 2)
