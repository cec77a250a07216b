"""Small filesystem helpers: atomic writes so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class AtomicFile:
    """A temporary file next to ``path`` (same suffix, so writers that infer the format from it work) that
    replaces ``path`` only on :meth:`commit`; :meth:`discard` removes it. Readers never see a half-written
    ``path``: the one helper behind every output file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        name, parent = self.path.name, self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=self.path.suffix, dir=parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        """Rename the temporary file over ``path``."""
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Remove the temporary file (a no-op after :meth:`commit`)."""
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    out = AtomicFile(path)
    try:
        yield out.tmp
        out.commit()
    finally:
        out.discard()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`InputError` with the path on failure."""
    from nerfvc.errors import InputError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
