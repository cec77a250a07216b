"""Building the C++ CPU kernels (``hashgrid.cpp``, ``fused.cpp``, ``references.cpp``) once per source set,
``-march`` and process.

``torch.utils.cpp_extension.load_inline`` compiles on first use (needs gcc and ninja) and caches the build.
The three sources build as one extension: each compile spends most of its time in torch's headers (~45 s
of the ~50 s each took on its own), so one translation unit, each source in its own namespace, costs one
header parse instead of three. The extension name carries a hash of the sources and the ``-march`` value,
so two checkouts with other sources, or an emulated-ISA build (``NERFVC_CPP_MARCH=haswell`` beside the
default ``native``), never rebuild each other's. ``NERFVC_NO_CPP`` switches every kernel off (callers then
use their pure-torch paths).
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

_LOADED: dict[str, ModuleType | None] = {}  # by -march


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


# what each source exports to Python (the bundle's bindings)
KERNEL_FUNCTIONS: dict[str, list[str]] = {
    "fused": [
        "fused_forward",
        "fused_backward",
        "fused_march",
        "fused_torso",
        "unit_fine_edges",
        "ray_box",
        "blend_forward",
        "blend_backward",
        "flush_denormals",
    ],
    "hashgrid": ["hashgrid_forward", "hashgrid_backward"],
    "references": ["blend_references_fused"],
}
_INCLUDE = re.compile(r"^\s*#\s*include\b.*$", re.M)
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)", re.M)


def bundle_source() -> str:
    """One C++ source holding every kernel: the includes first, then each file in its own namespace (their
    static helpers share names), its macros undefined after it, its exported functions brought to the
    global namespace for the bindings."""
    includes: list[str] = []
    bodies = []
    for stem, functions in sorted(KERNEL_FUNCTIONS.items()):
        source = Path(__file__).with_name(f"{stem}.cpp").read_text()
        found = _INCLUDE.findall(source)
        includes += [line for line in found if line not in includes and "omp.h" not in line]
        body = _INCLUDE.sub("", source)  # an ``#ifdef _OPENMP`` around omp.h is left empty
        undef = "".join(f"#undef {m}\n" for m in sorted(set(_DEFINE.findall(source))))
        using = "".join(f"using nerfvc_{stem}::{f};\n" for f in functions)
        bodies.append(f"namespace nerfvc_{stem} {{\n{body}\n}}  // namespace nerfvc_{stem}\n{undef}{using}")
    prelude = "\n".join(includes) + "\n#ifdef _OPENMP\n#include <omp.h>\n#endif\n"
    return prelude + "\n".join(bodies)


def load_kernel(stem: str) -> ModuleType | None:
    """The compiled kernels (one extension for every source; see the module docstring) if ``<stem>.cpp``'s
    functions are among them, or None (``NERFVC_NO_CPP`` set, no compiler, build error — logged once)."""
    if stem not in KERNEL_FUNCTIONS:
        raise ValueError(f"unknown kernel source {stem!r} (known: {sorted(KERNEL_FUNCTIONS)})")
    if os.environ.get("NERFVC_NO_CPP"):  # checked on every call: it switches loaded kernels off too
        return None
    march = cpp_march()
    if march in _LOADED:
        return _LOADED[march]
    ext: ModuleType | None = None
    try:
        from torch.utils.cpp_extension import load_inline

        source = bundle_source()
        digest = hashlib.sha1(source.encode()).hexdigest()[:10]
        tag = re.sub(r"\W", "_", march)
        name = f"nerfvc_kernels_{digest}_{tag}"
        _clear_stale_lock(name)
        ext = load_inline(
            name=name,
            cpp_sources=[source],
            functions=[f for _, fs in sorted(KERNEL_FUNCTIONS.items()) for f in fs],
            extra_cflags=["-O3", f"-march={march}", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, build error: the callers fall back to torch
        log.warning("C++ kernels unavailable (%s); using the pure-torch paths", e)
    _LOADED[march] = ext
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
