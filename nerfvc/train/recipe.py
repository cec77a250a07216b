"""A training recipe as command-line options: the `nerfvc train` options (defaults from :class:`TrainConfig`
and :class:`ModelConfig`, :mod:`nerfvc.configargs`) and the same options in one string for ``nerfvc batch
--train`` (a library module, so the batch runner does not import a command module)."""

from __future__ import annotations

import argparse

from nerfvc.argtypes import int_in, non_negative, number_in, positive
from nerfvc.configargs import ConfigArgs, Opt
from nerfvc.errors import InputError
from nerfvc.field.fields import blend_table_log2
from nerfvc.render.model import ModelConfig
from nerfvc.train.trainer import TrainConfig

TRAIN_OPTIONS = ConfigArgs(
    TrainConfig,
    Opt("minutes", type=positive, metavar="M"),
    Opt("iters", type=int_in(1), metavar="N"),
    Opt("batch_rays", type=int_in(1), metavar="N"),
    Opt("eval_frames", type=int_in(-1), metavar="N"),
    Opt("references", type=int_in(0, 4096), metavar="K"),
    Opt(
        "torso_motion",
        "--no-torso",
        help="ignore the dataset's torso shifts (the torso follows the head pose only, as in the paper)",
    ),
    Opt(
        "torso_inputs",
        "--no-torso-inputs",
        help="the torso shift only moves the torso's lookup and stays out of its MLPs (the recipe before "
        "the thirty-seventh session; the band's halves, if measured, are then sent but unused)",
    ),
    Opt("seed", metavar="N"),
    Opt("perceptual_weight", type=non_negative, metavar="W"),
    Opt("error_frac", type=number_in(0, 1), metavar="F"),
    Opt("seam_band", type=number_in(0, 0.25), metavar="F"),
    Opt("face_frac", type=number_in(0, 1), metavar="F"),
    Opt("distortion_weight", type=non_negative, metavar="W"),
    Opt("grid_decay", type=non_negative, metavar="W"),
    Opt("blend_smoothness", type=non_negative, metavar="W"),
    Opt("level_anneal", type=number_in(0, 1), metavar="F"),
    Opt("expression_noise", type=non_negative, metavar="S"),
    Opt("expression_noise_decay"),
    Opt("expression_scale", choices=("dim", "global")),
    Opt("frame_codes"),
    Opt("frame_code_weight", type=non_negative, metavar="W"),
    Opt("coded_share", type=number_in(0, 1), metavar="F"),
    Opt("coded_kbps", metavar="K,.."),
)
MODEL_OPTIONS = ConfigArgs(
    ModelConfig,
    Opt("consistency_dim", type=int_in(0, 4096), metavar="N"),
    Opt("consistency_dim", "--no-consistency", const=0, help="ablation: --consistency-dim 0"),
    Opt("n_fine", "--fine-samples", type=int_in(2, 256), metavar="N"),
    Opt("expression_used", "--expression-dims", type=int_in(0, 4096), metavar="K"),
)


def add_recipe_options(p: argparse.ArgumentParser) -> None:
    """The training-recipe options (`nerfvc train`, and `nerfvc batch --train` for every clip)."""
    TRAIN_OPTIONS.add_to(p)
    MODEL_OPTIONS.add_to(p)
    d = ModelConfig()
    p.add_argument(
        "--fine-hidden",
        type=int_in(8, 1024),
        metavar="N",
        help=f"hidden units of the fine head field's MLPs (default {d.fine.hidden} since the twenty-third "
        "session, with --fine-table 16: the 8 shared clips side by side against 64 units and 2^15 entries: "
        "64 of 112 metric values better, DISTS on 13 of 16 points, CSIM on 11, d6 0.25-0.6 dB worse; "
        "frames 12%% faster; docs/nerf.md)",
    )
    p.add_argument(
        "--torso-hidden",
        type=int_in(8, 1024),
        metavar="N",
        help=f"hidden units of the torso field's MLP (default {d.torso.hidden})",
    )
    p.add_argument(
        "--torso-planes",
        type=plane_resolutions,
        metavar="R,..",
        help="resolutions of the torso field's 2D feature planes, comma-separated (default "
        f"{','.join(map(str, d.torso.planes.resolutions))}; adding 512 on german: the training frames' torso "
        "+0.3 dB, the held-out frames' −0.1 dB, docs/nerf.md)",
    )
    p.add_argument(
        "--code-dim",
        type=int_in(1, 256),
        metavar="N",
        help="size of the fine head field's learned expression code, which also sets its number of blend "
        f"shapes (default {d.fine.code_dim}; smaller: less room to memorise each training expression)",
    )
    p.add_argument(
        "--fine-table",
        type=int_in(12, 22),
        metavar="K",
        help="log2 of the entries per level of the fine head field's hash table: fewer hash collisions "
        f"on the fine levels (default {d.fine.grid.log2_table} since the twenty-third session; 15 before, "
        "docs/nerf.md)",
    )
    top = 2 ** (d.fine.grid.log2_table // 3 + 1)  # above the cube root; lowered to (R+1)³ ≤ one hash level
    while blend_table_log2(top) > d.fine.grid.log2_table:
        top -= 1
    p.add_argument(
        "--blend-res",
        type=int_in(0, top),
        metavar="R",
        help="expression blend shapes in the fine head field: one dense R³ grid per expression-code channel, "
        f"so expressions act differently on each part of the face (default {d.fine.blend_res}; 0: none, the "
        f"recipe before 2026-12-01; at most {top})",
    )
    p.add_argument(
        "--no-color-code",
        action="store_true",
        help="keep the expression code out of the head fields' colour MLPs: colour follows the expression "
        "only through the geometry feature (default: it enters both MLPs)",
    )
    p.add_argument(
        "--density-code",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let the expression code enter the fine head field's density MLP as well as the blend shapes "
        "(default: no, density follows the expression only through the blend shapes, which act locally)",
    )


def plane_resolutions(text: str) -> list[int]:
    """``"32,64,128"`` → [32, 64, 128]: 1 to 8 resolutions, each 2 to 2048."""
    try:
        res = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not 1 <= len(res) <= 8 or not all(2 <= r <= 2048 for r in res):
        raise argparse.ArgumentTypeError(f"expected 1 to 8 resolutions between 2 and 2048, got {text!r}")
    return res


def recipe(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig]:
    """The (training, model) configs of parsed recipe options."""
    mcfg = MODEL_OPTIONS.build(args)
    if args.fine_hidden is not None:
        mcfg.fine.hidden = args.fine_hidden
    if args.torso_hidden is not None:
        mcfg.torso.hidden = args.torso_hidden
    if args.torso_planes is not None:
        mcfg.torso.planes.resolutions = args.torso_planes
    if args.fine_table is not None:
        mcfg.fine.grid.log2_table = args.fine_table
    if args.code_dim is not None:
        mcfg.fine.code_dim = args.code_dim
    if args.blend_res is not None:
        mcfg.fine.blend_res = args.blend_res
    need = blend_table_log2(mcfg.fine.blend_res)
    if mcfg.fine.blend_res and mcfg.fine.grid.log2_table < need:
        side = mcfg.fine.blend_res + 1
        raise InputError(
            f"--blend-res {mcfg.fine.blend_res} needs {side}³ vertices in one hash level: use --fine-table "
            f"{need} or more, or a smaller --blend-res"
        )
    if args.no_color_code:
        mcfg.coarse.color_code = mcfg.fine.color_code = False
    if args.density_code is not None:
        mcfg.fine.density_code = args.density_code
    return TRAIN_OPTIONS.build(args), mcfg


def parse_recipe(text: str) -> tuple[TrainConfig, ModelConfig]:
    """`nerfvc train` recipe options in one string (e.g. ``"--fine-hidden 32 --error-frac 0.5"``) →
    (training, model) configs; InputError naming the problem when they do not parse."""
    import shlex

    p = argparse.ArgumentParser(prog="--train", add_help=False, exit_on_error=False)
    add_recipe_options(p)
    try:
        args, rest = p.parse_known_args(shlex.split(text))
    except (argparse.ArgumentError, ValueError) as e:
        raise InputError(f"--train: {e}") from None
    if rest:
        raise InputError(f"--train: not a `nerfvc train` recipe option: {' '.join(rest)}")
    return recipe(args)
