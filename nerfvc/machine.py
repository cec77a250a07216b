"""What this machine is, and which precision and kernels run fastest on it — decided by measurement.

bfloat16 matmuls are ~2x faster than float32 on CPUs with bf16 units (AVX512_BF16, AMX) and ~11x slower on
CPUs without them (AVX2-only laptops and servers: oneDNN emulates bf16). No fixed default is right on both,
so :func:`choose` times the candidates at the field's real shapes once per machine and keeps the fastest,
caches the choice in ``$NERFVC_CACHE/choices.json`` keyed by CPU model, ATen/oneDNN ISA, torch version and
thread count, and logs it once; an environment variable overrides each choice. The field module makes two
such choices: the precision of the head MLPs (``fields.mlp_dtype``, ``NERFVC_PRECISION=auto|fp32|bf16``)
and the head's density kernel (``fields.density_kernel``, ``NERFVC_KERNEL=auto|fused|torch``), in
:mod:`nerfvc.field.fields`. Training, the frame renderer, eval and the live receiver all ask these functions.

:func:`nerfvc.record.machine_record` is the description every benchmark result carries.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from nerfvc.errors import InputError
from nerfvc.field.cpp import kernels_signature

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
_CHOSEN: dict[str, str] = {}


def cache_dir() -> Path:
    """``$NERFVC_CACHE`` or ``~/.cache/nerfvc`` (converted weights, kernel and precision choices)."""
    return Path(os.environ.get("NERFVC_CACHE", Path.home() / ".cache" / "nerfvc"))


@functools.cache  # read once: every precision/kernel ask keys its cache by the CPU model
def _cpuinfo() -> tuple[str, set[str]]:
    """CPU model string and its flag set (Linux /proc/cpuinfo; platform fallback elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's model string, e.g. ``AMD EPYC 7B13`` or ``Intel(R) Xeon(R) Processor``."""
    return _cpuinfo()[0]


def isa() -> dict[str, bool]:
    """The instruction-set extensions that decide NeRF speed here: which of :data:`ISA_FLAGS` the CPU has."""
    flags = _cpuinfo()[1]
    return {f: f in flags for f in ISA_FLAGS}


def precision_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"fp32"``, ``torch.bfloat16`` → ``"bf16"``."""
    return next(k for k, v in PRECISIONS.items() if v == dtype)


def _cache_key(device: torch.device) -> str:
    """CPU model (or GPU name), the kernel ISA torch and oneDNN may use, the torch version and, on CPU, the
    signature of our C++ kernels (their sources and ``-march``) and the thread count (which kernel wins can
    change with it)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        isa_cap = torch.backends.cpu.get_cpu_capability()
        onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "all")
        threads = torch.get_num_threads()
        name = f"{cpu_model()}|{isa_cap}|onednn {onednn}|kernels {kernels_signature()}|{threads} threads"
    return f"{device.type}|{name}|torch {torch.__version__}"


def best_seconds(run: Callable[[], object], repeat: int = 5) -> float:
    """Best wall seconds of ``repeat`` calls of ``run`` after one untimed warm-up call (other processes' load
    only ever adds time, so the minimum is the least disturbed estimate)."""
    run()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def measure(options: Mapping[str, Callable[[], float]], rounds: int = 2) -> dict:
    """Time every option → ``{"choice": name, "seconds": {name: s}}`` (fastest wins; an option that fails to
    run is skipped). The options run ``rounds`` times, in reversed order every other round, and each keeps its
    best time, so load from other processes that comes and goes biases no option."""
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    names = list(options)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if name in errors:
                continue
            try:
                t = options[name]()
            except RuntimeError as e:  # e.g. no bf16 kernels on this device, a kernel that did not build
                log.info("%s unavailable: %s", name, e)
                errors[name] = str(e)
                continue
            seconds[name] = min(t, seconds.get(name, t))
    if not seconds:
        raise RuntimeError(f"no option could run ({'; '.join(f'{k}: {v}' for k, v in errors.items())})")
    return {"choice": min(seconds, key=seconds.__getitem__), "seconds": seconds}


def _cached(path: Path) -> dict:
    """``choices.json`` as a dict (empty when missing or corrupt: everything is measured again)."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    return cached if isinstance(cached, dict) else {}


def _choice_key(what: str, device: torch.device | str) -> str:
    """The ``choices.json`` key of ``what`` on ``device`` (see :func:`_cache_key`)."""
    return f"{what}|{_cache_key(torch.device(device))}"


def remembered(what: str, device: torch.device | str, env: str, names: Iterable[str]) -> str | None:
    """The choice for ``what`` among ``names`` that needs no measuring: ``$env`` if it names one, else the one
    this process or ``$NERFVC_CACHE/choices.json`` holds; None when it must be measured. A ``$env`` other
    than ``auto`` that names no option is a clear error."""
    names = list(names)
    forced = os.environ.get(env, "auto").strip().lower() or "auto"
    if forced in names:
        return forced
    if forced != "auto":
        raise InputError(f"{env}={forced!r}: use auto, {', '.join(names)}")
    key = _choice_key(what, device)
    if key not in _CHOSEN:
        entry = _cached(cache_dir() / "choices.json").get(key)
        if not (isinstance(entry, dict) and entry.get("choice") in names):
            return None
        _CHOSEN[key] = entry["choice"]
    return _CHOSEN[key]


def choose(
    what: str, device: torch.device | str, env: str, options: Mapping[str, Callable[[], float]]
) -> str:
    """The option for ``what`` on ``device``: :func:`remembered` if it knows one, else the fastest by
    :func:`measure`, remembered in ``$NERFVC_CACHE/choices.json`` per CPU model, kernel ISA, torch version and
    thread count and logged once. ``$env`` = ``auto`` (or unset) measures; anything else is a clear error."""
    known = remembered(what, device, env, options)
    if known is not None:
        return known
    key = _choice_key(what, device)
    path = cache_dir() / "choices.json"
    entry = measure(options)
    cached = _cached(path)  # read again after measuring: another process may have added its own choices
    cached[key] = entry
    try:
        from nerfvc.fsutil import write_json_atomic

        write_json_atomic(path, cached)
    except OSError as e:  # a read-only home: measure again next time
        log.warning("%s: cannot cache the choice in %s (%s)", what, path, e)
    times = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in entry["seconds"].items())
    log.warning("%s: %s on %s (measured %s)", what, entry["choice"], key, times)
    _CHOSEN[key] = entry["choice"]
    return _CHOSEN[key]


class LoopTrial:
    """Chooses among ``names`` by timing a loop's own iterations, for work whose speed changes as the loop
    runs (training steps get cheaper as the occupancy grid prunes, so a candidate timed on the first steps
    can win there and lose later). Iterations before ``start`` run ``provisional``; from ``start`` on, the
    candidates take turns in blocks of ``block`` iterations (``rounds`` rounds, reversed every other round;
    the first iteration of each block is not timed; after the first round only candidates within ``keep``×
    the fastest mean go on, so a 10× slower one costs a single block), then the fastest mean wins and is
    remembered as :func:`choose` remembers. A remembered or forced choice (:func:`remembered`) skips it."""

    def __init__(
        self,
        what: str,
        device: torch.device | str,
        env: str,
        names: Iterable[str],
        provisional: str,
        start: int,
        block: int = 4,
        rounds: int = 2,
        keep: float = 2.0,
    ) -> None:
        self.what, self.device, self.env = what, torch.device(device), env
        self.names = list(names)
        self.provisional, self.start = provisional, start
        self.block, self.rounds, self.keep = block, rounds, keep
        self.chosen = self.names[0] if len(self.names) == 1 else remembered(what, device, env, self.names)
        self._round = 0
        self._plan: dict[int, tuple[str, bool]] = {}  # iteration → (candidate, timed) of the current round
        self._times: dict[str, list[float]] = {n: [] for n in self.names}

    @property
    def current(self) -> str:
        """The chosen candidate, or ``provisional`` while none is."""
        return self.chosen or self.provisional

    def _means(self) -> dict[str, float]:
        return {n: sum(t) / len(t) for n, t in self._times.items() if t}

    def _plan_round(self, first: int) -> None:
        """Blocks of the next round from iteration ``first`` on."""
        means = self._means()
        alive = [
            n for n in self.names if not means or means.get(n, math.inf) <= self.keep * min(means.values())
        ]
        order = alive if self._round % 2 == 0 else alive[::-1]
        self._plan = {
            first + k * self.block + j: (n, j > 0) for k, n in enumerate(order) for j in range(self.block)
        }
        self._round += 1

    def name(self, i: int) -> str:
        """The candidate iteration ``i`` runs."""
        if self.chosen is not None:
            return self.chosen
        if i >= self.start and self._round == 0:
            self._plan_round(i)
        return self._plan.get(i, (self.provisional, False))[0]

    def record(self, i: int, seconds: float) -> None:
        """Iteration ``i`` took ``seconds``; after the trial's last iteration the choice is made."""
        if self.chosen is not None or i not in self._plan:
            return
        name, timed = self._plan[i]
        if timed:
            self._times[name].append(seconds)
        if i < max(self._plan):
            return
        if self._round < self.rounds:
            self._plan_round(i + 1)
            if len({n for n, _ in self._plan.values()}) > 1:
                return
        options: dict[str, Callable[[], float]] = {
            n: functools.partial(float, m) for n, m in self._means().items()
        }
        self.chosen = choose(self.what, self.device, self.env, options)
