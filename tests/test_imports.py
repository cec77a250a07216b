"""The import graph of ``nerfvc``: no library module imports a CLI ``commands`` module, and no import cycles.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` statement, at module
level or inside a function (function-local imports only postpone a cycle to run time), except those under
``if TYPE_CHECKING:``. An edge goes to the deepest ``nerfvc`` module the statement names.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nerfvc"

KNOWN_CYCLES: list[set[str]] = []  # cycles allowed for now, as sorted module sets (none)


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (path, is package)}`` of every module of the package."""
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (p, package)
    return out


def _import_statements(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, except under ``if TYPE_CHECKING:``."""
    out: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            out.append(child)
        out.extend(_import_statements(child))
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` within the package."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        here = name.split(".") if package else name.split(".")[:-1]
        targets: list[str | None] = []
        for stmt in _import_statements(ast.parse(path.read_text(), str(path))):
            if isinstance(stmt, ast.Import):
                targets += [resolve(a.name) for a in stmt.names]
                continue
            base = stmt.module or ""
            if stmt.level:  # relative: from the current package, one level up per extra dot
                up = here[: len(here) - (stmt.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets += [resolve(f"{base}.{a.name}") or resolve(base) for a in stmt.names]
        graph[name] = {t for t in targets if t} - {name}
    return graph


def _is_cli(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module == "nerfvc.cli" or last == "commands" or last.endswith("_commands")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path ``a → b → ... → a``) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:
        start = min(comp)
        paths = {start: [start]}
        queue = [start]
        while queue:  # shortest way back to start inside the component
            v = queue.pop(0)
            for w in sorted(graph[v] & comp):
                if w == start:
                    cycles.append([*paths[v], start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    return cycles


def test_no_library_module_imports_a_commands_module():
    graph = import_graph()
    bad = sorted(
        f"{m} imports {d}" for m, deps in graph.items() if not _is_cli(m) for d in deps if _is_cli(d)
    )
    assert not bad, "library code must not import CLI modules:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = [c for c in find_cycles(import_graph()) if set(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_the_checks_see_what_they_should():
    """The graph reader finds function-local and relative imports, and the cycle finder reports a path."""
    graph = import_graph()
    assert "nerfvc.eval.pipeline" in graph["nerfvc.eval.run"]  # imported inside a function
    assert {"nerfvc.codec.tables", "nerfvc.codec.entropy"} <= graph["nerfvc.codec.coder"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert (
        _is_cli("nerfvc.codec.commands") and _is_cli("nerfvc.batch_commands") and not _is_cli("nerfvc.batch")
    )
    for known in KNOWN_CYCLES:  # a fixed exception must leave the list
        assert any(set(c) == known for c in find_cycles(graph)), f"{known} is no longer a cycle: remove it"
