"""The one ``nerfvc`` command line. Each subcommand lives next to the code it drives and registers here.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a function
taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing

from nerfvc import __version__
from nerfvc.errors import NerfvcError

# Modules that provide subcommands, in the order they appear in ``nerfvc --help``.
COMMAND_MODULES: list[str] = [
    "nerfvc.face.commands",  # prepare, inspect
    "nerfvc.pipeline.commands",  # encode, decode, codec-fit
    "nerfvc.embed.commands",  # embed-train
    "nerfvc.train.commands",  # train
    "nerfvc.render.commands",  # render
    "nerfvc.live.commands",  # receive, send
    "nerfvc.eval.commands",  # eval-baselines, eval
    "nerfvc.batch_commands",  # batch
    "nerfvc.mos.commands",  # mos build, mos serve, mos results
    "nerfvc.guard.commands",  # guard-fit
]


class _Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (no usage block), like the commands' own errors; subcommand parsers
    are of this class too."""

    def error(self, message: str) -> typing.NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = _Parser(prog="nerfvc", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nerfvc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the subcommand, turn user errors into one line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except NerfvcError as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds (e.g. a config diff)
        print(f"nerfvc {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"nerfvc {args.command}: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
