"""nerfvc.datasetdir: the one split rule (prepare and eval agree), the manifest check, the features check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nerfvc.datasetdir import (
    MANIFEST,
    dataset_split,
    features_path,
    frame_path,
    read_features,
    read_manifest,
    split_point,
    split_ranges,
)
from nerfvc.errors import InputError
from nerfvc.features import save_features


def test_split_rule_is_round_of_four_fifths_with_at_least_one_training_frame():
    assert [split_point(n) for n in (1, 2, 3, 8, 12, 13, 40, 500)] == [1, 2, 2, 6, 10, 10, 32, 400]
    assert split_ranges(12) == {"train": [0, 10], "test": [10, 12]}


def test_eval_scores_exactly_the_test_split_prepare_writes(tmp_path):
    """12 frames: round(9.6) = 10 train frames; the old eval rule int(9.6) = 9 scored training frame 9."""
    from nerfvc.eval.run import load_test_split
    from nerfvc.io.video import write_video

    video = tmp_path / "clip.mp4"
    frames = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(12)]
    write_video(video, frames, fps=25)
    gt, previous, info = load_test_split(video)
    assert info["test_frames"] == split_ranges(12)["test"] == [10, 12]
    assert len(gt) == 2
    assert abs(float(previous.mean()) - 180) < 3  # the frame just before the test split: frame 9
    assert abs(float(gt[0].mean()) - 200) < 3


def test_synthetic_dataset_uses_the_split_rule(tmp_path):
    from nerfvc.train.synthetic import make_synthetic_dataset

    d = make_synthetic_dataset(tmp_path / "ds", num_frames=13, size=16)
    m = read_manifest(d)
    assert m["split"] == split_ranges(13)
    assert dataset_split(m) == ((0, 10), (10, 13))
    assert frame_path(d, 12).exists() and len(read_features(d, m)["pose"]) == 13


def test_manifest_checks(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "missing")
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something-else", "complete": True}))
    with pytest.raises(InputError, match="not a nerfvc dataset"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "nerfvc-dataset", "complete": False}))
    with pytest.raises(InputError, match="incomplete"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path, complete=False)["complete"] is False
    assert dataset_split({"num_frames": 12}) == ((0, 10), (10, 12))  # no split recorded: the rule's
    with pytest.raises(InputError, match="malformed split"):
        dataset_split({"split": {"train": [0]}})


def test_features_must_match_the_manifest(tmp_path):
    save_features(features_path(tmp_path), expression=np.zeros((5, 3)), pose=np.zeros((5, 12)))
    assert len(read_features(tmp_path)["pose"]) == 5
    with pytest.raises(InputError, match="has 5 frames, manifest says 6"):
        read_features(tmp_path, {"num_frames": 6})
