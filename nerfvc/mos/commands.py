"""``nerfvc mos build | serve | results``: a subjective test of nerfvc against the classic codecs."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from nerfvc.argtypes import int_in, number_in, positive
from nerfvc.errors import InputError
from nerfvc.mos.results import MIN_REFERENCE


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mos`` and its three subcommands."""
    mos = sub.add_parser("mos", help="subjective test in the browser: build, serve, results (docs/mos.md)")
    cmds = mos.add_subparsers(dest="mos_command", metavar="build|serve|results", required=True)

    p = cmds.add_parser("build", help="build a test from `nerfvc eval --keep-videos` reports")
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR", help="report directories of `nerfvc eval`")
    p.add_argument("-o", "--out", required=True, help="new TEST directory")
    p.add_argument("--seconds", type=positive, default=4.0, help="clip length (default 4 s)")
    p.add_argument("--size", type=int, help="frame size (a size the reports kept; default: the largest)")
    p.add_argument("--raters", type=int_in(1, 1000), default=8, help="raters to plan orders for (default 8)")
    p.add_argument("--seed", type=int, help="seed of the orders (default: random, stored in test.json)")
    p.set_defaults(func=cmd_build)

    p = cmds.add_parser("serve", help="serve the rating pages; prints one link per rater")
    p.add_argument("test", metavar="TEST", help="directory made by `nerfvc mos build`")
    p.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (default 127.0.0.1:8000)")
    p.add_argument("--raters", type=int_in(1, 1000), help="links to print (default: all planned raters)")
    p.add_argument("--url", help="base URL raters reach, e.g. http://192.168.1.20:8000 (default: --listen)")
    p.set_defaults(func=cmd_serve)

    p = cmds.add_parser("results", help="screen raters, MOS and preferences with 95%% CIs, JSON + plot")
    p.add_argument("test", metavar="TEST", help="directory made by `nerfvc mos build`")
    p.add_argument("--json", help="results JSON (default TEST/results.json; the plot is TEST/subjective.png)")
    p.add_argument(
        "--min-reference",
        type=number_in(1, 5),
        default=MIN_REFERENCE,
        help=f"exclude raters whose mean hidden-reference score is below this (default {MIN_REFERENCE:g})",
    )
    p.add_argument("--report", metavar="EVAL_DIR", help="add a Subjective section to this eval report")
    p.set_defaults(func=cmd_results)


def cmd_build(args: argparse.Namespace) -> int:
    """Build the test; print what it holds."""
    from nerfvc.mos.build import build_test

    m = build_test(
        args.eval_dirs, args.out, seconds=args.seconds, size=args.size, raters=args.raters, seed=args.seed
    )
    kinds = [t.kind for t in m.trials.values()]
    print(
        f"{args.out}: {len(m.stimuli)} stimuli from {len(m.sources)} report(s) at {m.size}², "
        f"{kinds.count('acr')} ACR + {kinds.count('pair')} paired trials per rater, orders for "
        f"{len(m.raters)} raters (seed {m.seed})"
    )
    return 0


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InputError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (votes are already on disk: stopping loses nothing)."""
    from nerfvc.mos.server import MosServer

    host, port = _listen(args.listen)
    server = MosServer(args.test, args.raters)

    async def serve() -> None:
        try:
            bound = await server.start(host, port)
        except OSError as e:
            raise InputError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        base = args.url or f"http://{shown}:{bound}"
        print(f"serving {args.test} on {host}:{bound}; one link per rater (send each to one person):")
        for i, link in enumerate(server.links(base), 1):
            print(f"rater {i}: {link}")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    asyncio.run(serve())
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Compute and write the results; print a short summary."""
    from pathlib import Path

    from nerfvc.mos import results as R

    res = R.compute(args.test, args.min_reference)
    out = Path(args.json) if args.json else Path(args.test) / "results.json"
    plot = Path(args.test) / "subjective.png"
    R.write(res, out, plot)
    print(
        f"{res['raters_kept']} rater(s) kept, {res['raters_excluded']} excluded, "
        f"{res['votes_used']} votes used; wrote {out} and {plot}"
    )
    for r in res["raters"]:
        if r["excluded"]:
            print(f"  excluded rater {r['rater']}: {r['reason']}")
    if args.report:
        print(f"added the Subjective section to {R.add_to_report(args.report, res, plot)}")
    return 0
