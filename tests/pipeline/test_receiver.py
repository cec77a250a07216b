"""ReceiverPipeline: streams and packets → decoded code → the NeRF's features (the embedding's expansion)
→ frames at any size."""

from __future__ import annotations

import numpy as np
import pytest

from nerfvc.embed.train import expansion_matrix
from nerfvc.errors import ModelMismatchError
from nerfvc.io.video import read_frames
from nerfvc.pipeline import ReceiverPipeline, SenderPipeline

STEP_INDEX = -16  # half the default step: finer than the tables' Q = 1


def test_round_trip_of_a_model_without_embedding(tiny_model):
    ds, model = tiny_model
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    clip = sender.read_features(ds / "features.npz")
    dec = receiver.decode_stream(sender.encode_stream(clip.features, clip.pose, 25.0, step_index=STEP_INDEX))
    assert dec.report.valid.all() and dec.fps == 25.0
    assert dec.expression is dec.code  # no embedding: the code is the NeRF's input
    half_step = receiver.codec.tables.steps(STEP_INDEX)[6:] / 2
    assert np.all(np.abs(dec.expression - clip.features) <= half_step + 1e-6)


def test_round_trip_of_an_embedding_model_expands_the_code(tiny_embed_model):
    ds, model = tiny_embed_model
    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    clip = sender.read_features(ds / "features.npz")
    code = sender.to_code(clip.features)
    dec = receiver.decode_stream(sender.encode_stream(clip.features, clip.pose, 25.0, step_index=STEP_INDEX))
    assert dec.code.shape == (30, 8) and dec.expression.shape == (30, 79)
    np.testing.assert_array_equal(dec.expression, receiver.to_expression(dec.code))
    step = receiver.codec.tables.steps(STEP_INDEX)[6:]  # (C,) value and output lie in one bin
    assert np.all(np.abs(dec.code - code) <= step + 1e-6)
    # the expression is the expansion of the sent code, up to the expanded quantization error
    bound = np.abs(expansion_matrix(receiver.codec.embedding)) @ (step + 1e-6) + 1e-5  # (E,)
    assert np.all(np.abs(dec.expression - receiver.to_expression(code)) <= bound)


def test_frames_at_any_size(tiny_model, tmp_path):
    ds, model = tiny_model
    receiver = ReceiverPipeline.from_model_dir(model)
    clip = SenderPipeline.from_model_dir(model).read_features(ds / "features.npz")
    img = receiver.render(clip.features[0], clip.pose[0], 24, 16)
    assert img.shape == (16, 24, 3) and img.dtype == np.uint8
    assert receiver.renderer() is receiver.renderer()  # loaded once
    assert receiver.frame_size("48") == (48, 48) and receiver.frame_size("24x16") == (24, 16)
    out = tmp_path / "v.mp4"
    summary = receiver.write_video(out, clip.features[:5], clip.pose[:5], "24x16", 25.0)
    assert summary.startswith(f"wrote 5 frames 24x16 to {out}")
    frames = [f for f, _ in read_frames(out)]
    assert len(frames) == 5 and frames[0].shape == (16, 24, 3)


def test_a_torso_model_with_an_embedding_is_refused(tiny_model, tiny_embed_model, tmp_path):
    """The embedding codes the expression only: a NeRF that also takes the torso shift cannot be served."""
    import shutil

    from nerfvc.modeldir import finalize_model_dir

    model = tmp_path / "model"
    shutil.copytree(tiny_model[1], model)
    for name in ("embed.safetensors", "codec.json"):
        shutil.copyfile(tiny_embed_model[1] / name, model / name)
    finalize_model_dir(model)
    with pytest.raises(ModelMismatchError, match="torso"):
        ReceiverPipeline.from_model_dir(model)
