"""The whole pipeline through the one CLI: train → model with codec tables → encode → decode to features
and to video, and a stream made for another model is refused."""

import av
import numpy as np

from nerfvc.cli import main
from nerfvc.features import load_features, pose_to_rt, rotation_angle_deg
from nerfvc.modeldir import read_model_manifest
from nerfvc.train.synthetic import make_synthetic_dataset


def test_train_encode_decode_render(tmp_path, capsys):
    ds = make_synthetic_dataset(tmp_path / "ds", num_frames=24, size=40, torso_motion=True)
    model = tmp_path / "model"
    assert main(["train", str(ds), "-o", str(model), "--iters", "2", "--eval-frames", "1"]) == 0
    manifest = read_model_manifest(model)
    assert "codec.json" in manifest["files"]  # the codec tables are part of the fingerprinted model

    feats = ds / "features.npz"
    stream = tmp_path / "s.nvc"
    assert main(["encode", "--features", str(feats), "--model", str(model), "-o", str(stream)]) == 0
    assert main(["decode", str(stream), "--model", str(model), "-o", str(tmp_path / "d.npz")]) == 0
    src, dec = load_features(feats), load_features(tmp_path / "d.npz")
    assert dec["pose"].shape == src["pose"].shape
    _, t_src = pose_to_rt(src["pose"])
    _, t_dec = pose_to_rt(dec["pose"])
    assert rotation_angle_deg(src["pose"], dec["pose"]).max() < 1.0  # rotation error under a degree
    assert np.abs(t_src - t_dec).max() < 0.01
    assert dec["expression"].shape == (24, 81)  # the model's inputs: expression, then the torso shift
    assert np.abs(dec["expression"][:, 79:] - src["torso"]).max() < 0.005  # under 0.2 px at 40 px

    video = tmp_path / "d.mp4"
    assert main(["decode", str(stream), "--model", str(model), "-o", str(video), "--size", "32x24"]) == 0
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 24 and frames[0].shape == (24, 32, 3)

    # A second model (other weights → other fingerprint) must refuse the first model's stream.
    other = tmp_path / "other"
    args = ["train", str(ds), "-o", str(other), "--iters", "1", "--eval-frames", "1", "--seed", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["decode", str(stream), "--model", str(other), "-o", str(tmp_path / "x.npz")]) == 2
    assert "model" in capsys.readouterr().err
