"""``argparse`` types that refuse non-finite or out-of-range numbers with a clear message."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from nerfvc.errors import InputError


def number_in(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[str], float]:
    """A type accepting a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            what = f"> {lo:g}" if lo_open else f">= {lo:g}"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {what}"
                + (f" and <= {hi:g}" if math.isfinite(hi) else "")
                + f", got {text}"
            )
        return v

    return parse


positive = number_in(0.0, lo_open=True)
non_negative = number_in(0.0)


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """A type accepting an integer in ``[lo, hi]`` (``>= lo`` without ``hi``)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if hi is None and v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {v}")
        if hi is not None and not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {v}")
        return v

    return parse


def rate_list(text: str, option: str, allow_empty: bool = False) -> list[float]:
    """``"0.8,1.5,3"`` → ``[0.8, 1.5, 3.0]``: comma-separated rates in kbps, each finite and in (0, 1000);
    a one-line :class:`InputError` naming ``option`` otherwise (an empty list only with ``allow_empty``)."""
    try:
        rates = [float(k) for k in text.split(",") if k.strip()]
    except ValueError:
        rates = [math.nan]
    if (not rates and not allow_empty) or not all(0 < k < 1000 for k in rates):
        raise InputError(f"{option} must be comma-separated positive rates (kbps), got {text!r}")
    return rates
