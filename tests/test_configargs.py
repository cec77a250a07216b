"""``nerfvc.configargs``: command-line options whose defaults, types and help come from a dataclass."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nerfvc.configargs import ConfigArgs, Opt, field_comments


@dataclass
class Toy:
    path: Path  # where it goes
    n: int = 3  # how many (0: none)
    rate: float = 0.5
    name: str = "abc"  # a name, 100% ascii
    cap: int | None = None  # optional cap
    fast: bool = False  # go fast
    shared: bool = True  # share it
    # a comment block above the field
    # on two lines
    level: int = 2  # and one on its own line
    noted: int = field(default=1, metadata={"help": "from metadata"})  # not this comment
    items: list[int] = field(default_factory=list)


def _parser(*opts: str | Opt, cls: type = Toy) -> tuple[argparse.ArgumentParser, ConfigArgs]:
    p = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    args = ConfigArgs(cls, *opts)
    args.add_to(p)
    return p, args


def _help(p: argparse.ArgumentParser) -> str:
    return " ".join(p.format_help().split())


def test_defaults_types_and_flags_come_from_the_fields():
    opts = ("path", "n", "rate", "name", "cap", "fast", "shared", Opt("level", "--lvl"))
    p, a = _parser(*opts)
    assert a.build(p.parse_args(["--path", "x"])) == Toy(Path("x"))
    argv = ["--path", "x", "--n", "7", "--rate", "2", "--name", "q", "--cap", "9", "--fast", "--no-shared"]
    cfg = a.build(p.parse_args([*argv, "--lvl", "4"]))
    assert cfg == Toy(Path("x"), n=7, rate=2.0, name="q", cap=9, fast=True, shared=False, level=4)
    assert isinstance(cfg.path, Path) and isinstance(cfg.rate, float)


def test_help_shows_each_default_once_with_the_comment():
    p, _ = _parser("path", "n", "rate", "name", "cap", "fast", "shared", "level", "noted")
    text = _help(p)
    assert "--path PATH where it goes" in text
    assert "how many (0: none; default 3)" in text  # folded into the comment's parenthesis
    assert "(default 0.5)" in text and "a name, 100% ascii (default abc)" in text
    assert "optional cap" in text and "optional cap (default" not in text  # None: no default shown
    assert "--fast go fast" in text and "--no-shared share it" in text
    assert "a comment block above the field on two lines and one on its own line (default 2)" in text
    assert "from metadata (default 1)" in text and "not this comment" not in text
    assert text.count("default") == 5


def test_a_changed_dataclass_default_is_the_cli_default():
    @dataclass
    class Changed(Toy):
        n: int = 11

    p, a = _parser("path", "n", cls=Changed)
    assert a.build(p.parse_args(["--path", "x"])).n == 11
    assert "how many (0: none; default 11)" in _help(p)  # the base class's comment is kept


def test_const_alias_and_subset():
    p, a = _parser("n", Opt("n", "--none", const=0, help="no n"), "rate")
    assert p.parse_args([]).n == 3 and p.parse_args(["--none"]).n == 0
    q = argparse.ArgumentParser()
    a.add_to(q, "rate")
    ns = q.parse_args(["--rate", "1"])
    assert not hasattr(ns, "n") and a.build(ns, path=Path("p")) == Toy(Path("p"), rate=1.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "x"], "argument --n: not an integer: 'x'"),
        (["--rate", "nan"], "argument --rate: must be a finite number, got nan"),
    ],
)
def test_bad_values_are_refused_clearly(argv, message):
    p, _ = _parser("path", "n", "rate")
    with pytest.raises(argparse.ArgumentError, match=message):
        p.parse_args(["--path", "x", *argv])


def test_a_field_without_default_is_a_required_option(capsys):
    p, _ = _parser("path", "n")
    with pytest.raises(SystemExit):
        p.parse_args([])
    assert "the following arguments are required: --path" in capsys.readouterr().err


def test_misuse_fails_when_the_command_is_built():
    with pytest.raises(TypeError, match="no field 'nope'"):
        ConfigArgs(Toy, "nope")
    with pytest.raises(TypeError, match="no command-line form"):
        _parser("items")
    p, a = _parser("n")
    with pytest.raises(ValueError, match="already defined"):
        a.add_to(p)  # the same field twice on one parser


def test_comments_are_read_from_the_class_body():
    c = field_comments(Toy)
    assert c["n"] == "how many (0: none)" and "rate" not in c and c["noted"] == "not this comment"
    assert field_comments(int) == {}
