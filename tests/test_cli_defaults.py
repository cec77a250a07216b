"""Every command built on ``nerfvc.configargs``: no flags give the dataclass defaults, ``--help`` shows each
default once, bad values are one line and exit 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nerfvc.cli import build_parser, main


def test_every_command_without_flags_gives_its_dataclass_defaults():
    from nerfvc import batch_commands
    from nerfvc.batch import BatchConfig
    from nerfvc.embed import commands as embed_cmd
    from nerfvc.embed.encoder import EmbedConfig
    from nerfvc.embed.train import TrainConfig as EmbedTrainConfig
    from nerfvc.face import commands as face_cmd
    from nerfvc.face.prepare import PrepareParams
    from nerfvc.render.model import ModelConfig
    from nerfvc.train import commands as train_cmd
    from nerfvc.train.trainer import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "D", "-o", "M"])
    assert train_cmd.TRAIN_OPTIONS.build(args) == TrainConfig()
    assert train_cmd.MODEL_OPTIONS.build(args) == ModelConfig()
    args = parser.parse_args(["embed-train", "D", "-o", "M"])
    assert embed_cmd.EMBED_OPTIONS.build(args) == EmbedConfig()
    assert embed_cmd.TRAIN_OPTIONS.build(args) == EmbedTrainConfig()
    assert args.step == 1.0
    args = parser.parse_args(["prepare", "v.mp4", "-o", "D"])
    assert face_cmd.PREPARE_OPTIONS.build(args, source="v.mp4") == PrepareParams("v.mp4")
    args = parser.parse_args(["batch", "v.mp4", "--work", "W"])
    assert batch_commands.OPTIONS.build(args) == BatchConfig(Path("W"))


def test_help_shows_the_dataclass_defaults_once(capsys):
    from nerfvc.train.trainer import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = TrainConfig()
    segments = [seg for seg in text.split(" --")[1:] if seg.split()]  # "--name ARG help ..."
    for name, value in [
        ("iters", d.iters),
        ("batch-rays", d.batch_rays),
        ("eval-frames", d.eval_frames),
        ("seed", d.seed),
        ("perceptual-weight", d.perceptual_weight),
        ("consistency-dim", 8),
    ]:
        helps = [seg for seg in segments if seg.split()[0] == name and "default" in seg]
        assert len(helps) == 1 and helps[0].count(f"default {value:g})") == 1, (name, helps)
    assert "100000" not in text.replace("default 100000", "")  # written nowhere else


def test_bad_values_give_one_line_and_exit_2(capsys):
    for argv, message in [
        (["--batch-rays", "0"], "argument --batch-rays: must be an integer >= 1, got 0"),
        (["--minutes", "-1"], "argument --minutes: must be a finite number > 0, got -1"),
        (["--iters", "many"], "argument --iters: not an integer: 'many'"),
        (["--eval-frames", "-2"], "argument --eval-frames: must be an integer >= -1, got -2"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["train", "D", "-o", "M", *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"nerfvc train: error: {message} "), err


def test_dataclass_fields_named_in_the_commands_exist():
    from nerfvc import batch_commands
    from nerfvc.embed import commands as embed_cmd
    from nerfvc.eval import commands as eval_cmd
    from nerfvc.face import commands as face_cmd
    from nerfvc.train import commands as train_cmd

    for c in (
        train_cmd.TRAIN_OPTIONS,
        train_cmd.MODEL_OPTIONS,
        embed_cmd.EMBED_OPTIONS,
        embed_cmd.TRAIN_OPTIONS,
        face_cmd.PREPARE_OPTIONS,
        eval_cmd.OPTIONS,
        batch_commands.OPTIONS,
    ):
        names = {f.name for f in dataclasses.fields(c.cls)}
        assert {o.field for o in c.opts} <= names
