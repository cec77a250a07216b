"""Building the C++ CPU kernels (``hashgrid.cpp``, ``fused.cpp``) once per source, ``-march`` and process.

``torch.utils.cpp_extension.load_inline`` compiles on first use (~30-40 s, needs gcc and ninja) and caches the
build; the extension name carries a hash of the source and the ``-march`` value, so two checkouts with other
sources, or an emulated-ISA build (``NERFVC_CPP_MARCH=haswell`` beside the default ``native``), never rebuild
each other's. ``NERFVC_NO_CPP`` switches every kernel off (callers then use their pure-torch paths).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_LOADED: dict[tuple[str, str], object | None] = {}


def cpp_march() -> str:
    """The ``-march`` the kernels are compiled for: ``NERFVC_CPP_MARCH`` or ``native``."""
    return os.environ.get("NERFVC_CPP_MARCH", "native")


def load_kernel(stem: str, functions: list[str]) -> object | None:
    """The compiled ``<stem>.cpp`` beside this file exposing ``functions``, or None (``NERFVC_NO_CPP`` set, no
    compiler, build error — logged once)."""
    if os.environ.get("NERFVC_NO_CPP"):  # checked on every call: it switches loaded kernels off too
        return None
    march = cpp_march()
    key = (stem, march)
    if key in _LOADED:
        return _LOADED[key]
    ext = None
    try:
        from torch.utils.cpp_extension import load_inline

        source = Path(__file__).with_name(f"{stem}.cpp").read_text()
        digest = hashlib.sha1(source.encode()).hexdigest()[:10]
        tag = re.sub(r"\W", "_", march)
        ext = load_inline(
            name=f"nerfvc_{stem}_{digest}_{tag}",
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
