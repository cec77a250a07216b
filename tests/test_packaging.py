"""pyproject.toml declares what requirements*.txt install (so ``pip install nerfvc[...]`` works)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {re.sub(r"\s+", "", line) for line in lines if line.strip() and not line.lstrip().startswith("#")}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;]", requirement, maxsplit=1)[0].lower()


def test_pyproject_declares_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = set(project["dependencies"])
    extras = {k: set(v) for k, v in project["optional-dependencies"].items()}
    assert set(extras) == {"live", "eval", "cluster", "dev"}
    assert "torch==2.13.0" in core  # the version make setup installs first
    assert core | extras["live"] | extras["eval"] == _requirements("requirements.txt") | {"torch==2.13.0"}
    assert extras["dev"] == _requirements("requirements-dev.txt")
    assert extras["cluster"] == _requirements("requirements-cluster.txt")
    declared = {_name(r) for r in core.union(*extras.values())}
    nodeps = {_name(r) for r in _requirements("requirements-nodeps.txt")}
    assert not declared & nodeps, "packages installed with --no-deps must not be declared"
    assert "torchvision" not in declared


def test_make_test_runs_the_pinned_type_checker():
    """``make test`` → ``make lint`` runs mypy, pinned (a new release may find new errors) and configured
    for the whole package."""
    lint = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/mypy" in lint
    assert any(r.startswith("mypy==") for r in _requirements("requirements-dev.txt"))
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["files"] == ["nerfvc"]
