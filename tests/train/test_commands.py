"""``nerfvc train``'s options map onto ``TrainConfig`` / ``ModelConfig`` fields; defaults are theirs."""

from __future__ import annotations

import dataclasses

import pytest

from nerfvc.cli import build_parser
from nerfvc.errors import InputError
from nerfvc.render.model import ModelConfig, PortraitNeRF
from nerfvc.train import commands as train_cmd
from nerfvc.train import recipe
from nerfvc.train.trainer import TrainConfig


def _configs(*flags: str) -> tuple[TrainConfig, ModelConfig, str | None]:
    args = build_parser().parse_args(["train", "D", "-o", "M", *flags])
    return train_cmd.TRAIN_OPTIONS.build(args), train_cmd.MODEL_OPTIONS.build(args), args.size


def test_no_flags_give_the_dataclass_defaults():
    assert _configs() == (TrainConfig(), ModelConfig(), None)


@pytest.mark.parametrize(
    ("flags", "train", "model"),
    [
        (["--minutes", "2.5"], {"minutes": 2.5}, {}),
        (["--iters", "7"], {"iters": 7}, {}),
        (["--batch-rays", "1024"], {"batch_rays": 1024}, {}),
        (["--eval-frames", "-1"], {"eval_frames": -1}, {}),
        (["--seed", "3"], {"seed": 3}, {}),
        (["--no-torso"], {"torso_motion": False}, {}),
        (["--no-consistency"], {}, {"consistency_dim": 0}),
        (["--consistency-dim", "4"], {}, {"consistency_dim": 4}),
    ],
)
def test_each_flag_sets_its_field(flags, train, model):
    cfg, mcfg, _ = _configs(*flags)
    assert cfg == dataclasses.replace(TrainConfig(), **train)
    assert mcfg == dataclasses.replace(ModelConfig(), **model)


def test_size_is_passed_to_train(monkeypatch, capsys):
    seen = {}

    def fake_train(dataset, out, cfg, mcfg, size=None):
        seen.update(dataset=dataset, out=out, cfg=cfg, mcfg=mcfg, size=size)
        return type("R", (), {"fingerprint": "f", "steps": 1, "seconds": 0.0, "metrics": {}})()

    monkeypatch.setattr(train_cmd, "train", fake_train)
    args = build_parser().parse_args(["train", "D", "-o", "M", "--size", "64x48", "--iters", "2"])
    assert args.func(args) == 0
    assert seen == {
        "dataset": "D",
        "out": "M",
        "cfg": TrainConfig(iters=2),
        "mcfg": ModelConfig(),
        "size": "64x48",
    }
    assert '"steps": 1' in capsys.readouterr().out


def test_recipe_options_set_nested_model_fields():
    argv = ["train", "D", "-o", "M", "--fine-hidden", "48", "--torso-hidden", "16", "--blend-res", "15"]
    cfg, mcfg = recipe.recipe(build_parser().parse_args(argv))
    assert cfg == TrainConfig()
    assert mcfg.fine.hidden == 48 and mcfg.torso.hidden == 16 and mcfg.fine.blend_res == 15
    assert mcfg.coarse == ModelConfig().coarse  # only the named fields change
    _, mcfg = recipe.parse_recipe("--code-dim 8")
    assert mcfg.fine.code_dim == 8 and mcfg.coarse == ModelConfig().coarse
    fine = PortraitNeRF(mcfg).fine  # one blend shape per code channel
    assert fine.blend.shape[1] == 8 and ModelConfig().fine.code_dim == 16
    _, mcfg = recipe.parse_recipe("--fine-table 17")
    assert PortraitNeRF(mcfg).fine.grid.table.shape[1] == 2**17 and mcfg.coarse == ModelConfig().coarse
    with pytest.raises(InputError, match="--fine-table 15 or more"):
        recipe.parse_recipe("--fine-table 14")  # the default blend shapes (32³) no longer fit one level
    assert recipe.parse_recipe("--fine-table 14 --blend-res 24")[1].fine.grid.log2_table == 14
    cfg, mcfg = recipe.parse_recipe("--no-color-code --frame-codes")
    assert not mcfg.coarse.color_code and not mcfg.fine.color_code and cfg.frame_codes
    assert ModelConfig().fine.color_code and not TrainConfig().frame_codes
    _, mcfg = recipe.parse_recipe("--density-code")
    assert mcfg.fine.density_code and mcfg.coarse.density_code and not ModelConfig().fine.density_code
    _, mcfg = recipe.parse_recipe("--no-density-code")
    assert mcfg == ModelConfig()
    _, mcfg = recipe.parse_recipe("--expression-dims 24")
    assert mcfg.expression_used == 24 and mcfg.expression_dim == 79
    # the seam band is on by default; 0 restores the recipe without it, a band wider than a quarter is refused
    assert TrainConfig().seam_band > 0 and recipe.parse_recipe("--seam-band 0")[0].seam_band == 0
    with pytest.raises(InputError, match="seam-band"):
        recipe.parse_recipe("--seam-band 0.3")
    _, mcfg = recipe.parse_recipe("--fine-samples 12")
    assert mcfg.n_fine == 12 and ModelConfig().n_fine == 24 and mcfg.n_coarse == ModelConfig().n_coarse
    with pytest.raises(InputError, match="fine-samples"):
        recipe.parse_recipe("--fine-samples 1")
    _, mcfg = recipe.parse_recipe("--torso-planes 32,64,128,256,512")
    torso = PortraitNeRF(mcfg).torso  # one plane per resolution, the MLP's input widened to match
    assert [p.shape[-1] for p in torso.planes.planes] == [32, 64, 128, 256, 512]
    assert torso.net[0].in_features == ModelConfig().torso.planes.features * 5 + 12 + 8 + 8
    assert ModelConfig().torso.planes.resolutions == [32, 64, 128, 256]  # the default is not touched
    for bad in ("1,64", "32,x", ""):
        with pytest.raises(InputError, match="torso-planes"):
            recipe.parse_recipe(f"--torso-planes={bad}")


def test_parse_recipe_reads_one_string_and_names_what_is_wrong():
    cfg, mcfg = recipe.parse_recipe("--fine-hidden 48 --error-frac 0.5")
    assert cfg == dataclasses.replace(TrainConfig(), error_frac=0.5) and mcfg.fine.hidden == 48
    assert recipe.parse_recipe("") == (TrainConfig(), ModelConfig())
    with pytest.raises(InputError, match="--bogus"):
        recipe.parse_recipe("--bogus 1")
    with pytest.raises(InputError, match="fine-hidden"):
        recipe.parse_recipe("--fine-hidden lots")
    with pytest.raises(InputError, match="blend-res"):  # 41³ grid points do not fit a 2¹⁶ hash level
        recipe.parse_recipe("--blend-res 40")
    assert recipe.parse_recipe("--blend-res 39")[1].fine.blend_res == 39  # 40³ do
