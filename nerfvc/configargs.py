"""Command-line options derived from dataclass configs, so each default is written once: in the dataclass.

A command lists the fields it exposes; everything else comes from the field itself::

    TRAIN = ConfigArgs(TrainConfig, "minutes", Opt("batch_rays", type=int_in(1)), Opt("seed"))
    TRAIN.add_to(parser)     # --minutes, --batch-rays, --seed
    cfg = TRAIN.build(args)  # TrainConfig(minutes=..., batch_rays=..., seed=...), other fields default

* flag: ``--field-name`` (a bool field that defaults to True: ``--no-field-name``), or :attr:`Opt.flag`;
* type: from the annotation (``int``, ``float`` (finite), ``str``, ``Path``, ``X | None``; a ``bool`` field
  is a switch), or :attr:`Opt.type` (e.g. a range check from :mod:`nerfvc.argtypes`);
* help: :attr:`Opt.help`, else the field's ``metadata["help"]``, else the comment on the field's line(s) in
  the class body; ``(default X)`` is appended from the dataclass default (not for ``None``, ``""`` or
  switches);
* a field without a default is a required option.

Light to import (no torch): :mod:`nerfvc.cli` registers every command at start-up.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import math
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_UNSET: Any = object()  # "not given" for Opt fields where None is a meaningful value


@dataclass(frozen=True)
class Opt:
    """How one dataclass field appears on the command line; unset attributes come from the field."""

    field: str
    flag: str | None = None  # e.g. "--no-torso"; default --field-name (--no-field-name: True-default bool)
    type: Callable[[str], Any] | None = None  # parses the text; default from the annotation
    help: str | None = None  # default: metadata["help"] or the field's comment
    const: Any = _UNSET  # a switch storing this value into the field (e.g. --no-consistency: 0)
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None


def finite_float(text: str) -> float:
    """``float`` that refuses nan / inf with a clear message."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


_PARSERS: dict[Any, Callable[[str], Any]] = {int: _integer, float: finite_float, str: str, Path: Path}


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the class body's source: the comment lines right above each annotated
    attribute and the ``#`` comments on its own lines, joined; e.g. ``seed: int = 0  # random seed`` →
    ``{"seed": "random seed"}``. Empty when the source is not available."""
    if not dataclasses.is_dataclass(cls):
        return {}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line number (from 1) → comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            first = node.lineno
            while first - 1 in comments and lines[first - 2].lstrip().startswith("#"):
                first -= 1  # a comment block right above the field
            end = node.end_lineno or node.lineno
            text = " ".join(comments[i] for i in range(first, end + 1) if i in comments)
            if text:
                out[node.target.id] = text
    return out


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; anything else unchanged."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _with_default(help_text: str, default: Any) -> str:
    """``help_text`` with ``default``: ``"a (b)"`` → ``"a (b; default X)"``, ``"a"`` → ``"a (default X)"``."""
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    if help_text.endswith(")"):
        return f"{help_text[:-1]}; default {shown})"
    return f"{help_text} (default {shown})".strip()


class ConfigArgs(Generic[T]):
    """The command-line options of some fields of the dataclass ``cls`` (see the module docstring)."""

    def __init__(self, cls: type[T], *opts: str | Opt):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls
        self.fields = {f.name: f for f in dataclasses.fields(cls)}
        self.hints = typing.get_type_hints(cls)
        self.opts = [Opt(o) if isinstance(o, str) else o for o in opts]
        for o in self.opts:
            if o.field not in self.fields:
                raise TypeError(f"{cls.__name__} has no field {o.field!r}")

    def default(self, name: str) -> Any:
        """The dataclass default of field ``name`` (``MISSING`` when it has none)."""
        f = self.fields[name]
        if f.default is not MISSING:
            return f.default
        if f.default_factory is not MISSING:
            return f.default_factory()
        return MISSING

    def _help(self, o: Opt) -> str:
        if o.help is not None:
            return o.help
        if "help" in self.fields[o.field].metadata:
            return str(self.fields[o.field].metadata["help"])
        for c in self.cls.__mro__:  # a subclass that changes a default keeps its base's comment
            if o.field in field_comments(c):
                return field_comments(c)[o.field]
        return ""

    def add_to(self, parser: argparse.ArgumentParser, *only: str) -> None:
        """Add the options (those of the fields in ``only``, when given) to ``parser``."""
        taken = {a.dest for a in parser._actions}
        for o in self.opts:
            if only and o.field not in only:
                continue
            if o.field in taken and o.const is _UNSET:
                raise ValueError(f"{parser.prog}: option {o.field!r} is already defined")
            self._add(parser, o)

    def _add(self, parser: argparse.ArgumentParser, o: Opt) -> None:
        default = self.default(o.field)
        tp = _unwrap_optional(self.hints[o.field])
        help_text = self._help(o)
        kw: dict[str, Any] = {"dest": o.field}
        if default is MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        if o.const is not _UNSET:
            flag = o.flag or "--" + o.field.replace("_", "-")
            kw.update(action="store_const", const=o.const)
        elif tp is bool and o.type is None:
            if default is True:
                flag = o.flag or "--no-" + o.field.replace("_", "-")
                kw["action"] = "store_false"
            else:
                flag = o.flag or "--" + o.field.replace("_", "-")
                kw["action"] = "store_true"
        else:
            flag = o.flag or "--" + o.field.replace("_", "-")
            parse = o.type or _PARSERS.get(tp)
            if parse is None:
                raise TypeError(
                    f"{self.cls.__name__}.{o.field}: no command-line form for {tp!r}; give Opt(type=...)"
                )
            kw["type"] = parse
            if o.metavar:
                kw["metavar"] = o.metavar
            if o.choices is not None:
                kw["choices"] = o.choices
            if default not in (MISSING, None, ""):
                help_text = _with_default(help_text, default)
        kw["help"] = help_text.replace("%", "%%")  # argparse %-formats help strings
        parser.add_argument(flag, **kw)

    def build(self, args: argparse.Namespace, **values: Any) -> T:
        """The dataclass from the parsed ``args`` (the fields whose options were added) and ``values``
        (other fields, e.g. positional arguments); fields in neither keep their defaults."""
        kw = {o.field: getattr(args, o.field) for o in self.opts if hasattr(args, o.field)}
        kw.update(values)
        return self.cls(**kw)
