"""A MODEL directory with a face-mesh model gives both ends its eyes: the sender's encoder keeps a wink and
the receiver's renderer draws it by halves (``nerfvc.codec.wink``, ``nerfvc.render.halves``)."""

from __future__ import annotations

import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

from nerfvc.codec.encoder import encode_stream
from nerfvc.datasetdir import FACE_MODEL_FILE
from nerfvc.face.synthetic import closing, symmetric_face
from nerfvc.modeldir import finalize_model_dir
from nerfvc.pipeline.receiver import ReceiverPipeline
from nerfvc.pipeline.sender import SenderPipeline


def test_both_ends_take_the_eyes_from_the_model_directory(tiny_model, tmp_path):
    _, source = tiny_model
    model = tmp_path / "model"
    shutil.copytree(source, model)
    receiver = ReceiverPipeline.from_model_dir(model)
    assert receiver.codec.eyes is None and receiver.renderer().halves is None  # a synthetic face model
    e = receiver.renderer().model.cfg.expression_dim
    mean, basis = symmetric_face(e, mixed=True)
    face = load_file(str(model / FACE_MODEL_FILE))
    face.update(mean=mean.astype(np.float32), basis=basis.astype(np.float32))
    save_file(face, str(model / FACE_MODEL_FILE))
    finalize_model_dir(model)

    sender, receiver = SenderPipeline.from_model_dir(model), ReceiverPipeline.from_model_dir(model)
    eyes = sender.codec.eyes
    assert eyes is not None and receiver.renderer().halves is not None
    width = sender.codec.tables.code_dim
    features = np.zeros((40, width), np.float32)  # the mean expression, then a held wink of the left eye
    features[15:27, :e] = closing(("left",)).reshape(-1) @ basis
    pose = np.tile(np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0.6], np.float32), (40, 1))
    step = -80  # where this synthetic clip's tables round most of the wink away
    decoded = receiver.decode_stream(sender.encode_stream(features, pose, 25.0, step_index=step))
    left, right = eyes.openings(decoded.expression[15:27, :e]).mean(0)
    assert left < 0.3 and right > 0.7  # a wink reaches the receiver
    assert np.abs(eyes.asymmetry(decoded.expression[:12, :e])).max() < eyes.threshold  # open eyes stay open
    c = sender.codec
    plain = receiver.decode_stream(
        encode_stream(c.tables, c.fingerprint, features, pose, 25.0, step_index=step)
    )
    assert eyes.openings(plain.expression[15:27, :e]).mean(0)[0] > 0.3  # without the eyes: half a wink
