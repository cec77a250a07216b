"""Building the C++ CPU kernels (``hashgrid.cpp``, ``fused.cpp``) once per source, ``-march`` and process.

``torch.utils.cpp_extension.load_inline`` compiles on first use (~30-40 s, needs gcc and ninja) and caches the
build; the extension name carries a hash of the source and the ``-march`` value, so two checkouts with other
sources, or an emulated-ISA build (``NERFVC_CPP_MARCH=haswell`` beside the default ``native``), never rebuild
each other's. ``NERFVC_NO_CPP`` switches every kernel off (callers then use their pure-torch paths).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

_LOADED: dict[tuple[str, str], ModuleType | None] = {}


def cpp_march() -> str:
    """The ``-march`` the kernels are compiled for: ``NERFVC_CPP_MARCH`` or ``native``."""
    return os.environ.get("NERFVC_CPP_MARCH", "native")


def kernels_signature() -> str:
    """A short hash of every kernel source and the ``-march`` they build for: choices measured on the kernels
    (``nerfvc.machine``) are remembered under it, so changed kernels are measured again."""
    return _signature(cpp_march())


@functools.cache
def _signature(march: str) -> str:  # read once per process and -march: it is asked for every frame
    digest = hashlib.sha1(march.encode())
    for path in sorted(Path(__file__).parent.glob("*.cpp")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def load_kernel(stem: str, functions: list[str]) -> ModuleType | None:
    """The compiled ``<stem>.cpp`` beside this file exposing ``functions``, or None (``NERFVC_NO_CPP`` set, no
    compiler, build error — logged once)."""
    if os.environ.get("NERFVC_NO_CPP"):  # checked on every call: it switches loaded kernels off too
        return None
    march = cpp_march()
    key = (stem, march)
    if key in _LOADED:
        return _LOADED[key]
    ext: ModuleType | None = None
    try:
        from torch.utils.cpp_extension import load_inline

        source = Path(__file__).with_name(f"{stem}.cpp").read_text()
        digest = hashlib.sha1(source.encode()).hexdigest()[:10]
        tag = re.sub(r"\W", "_", march)
        name = f"nerfvc_{stem}_{digest}_{tag}"
        _clear_stale_lock(name)
        ext = load_inline(
            name=name,
            cpp_sources=[source],
            functions=functions,
            extra_cflags=["-O3", f"-march={march}", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, build error: the caller falls back to torch
        log.warning("%s: C++ kernel unavailable (%s); using the pure-torch path", stem, e)
    _LOADED[key] = ext
    return ext


def _clear_stale_lock(name: str, max_age_s: float = 600.0) -> None:
    """Remove the build lock of extension ``name`` if it is older than any build takes: a process killed while
    compiling leaves it behind, and torch would wait for it forever."""
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > max_age_s:
        log.warning("%s: removing a stale build lock (%.0f s old, its build was interrupted)", name, age)
        lock.unlink(missing_ok=True)
