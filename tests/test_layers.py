"""Imports point one way (DESIGN.md, "One training driver"): models → kv_cache / sampling → data / training /
eval → CLIs, with shared clients and helpers below the packages that use them.

Every .py file under fc_jax/ is parsed with `ast`; every Import / ImportFrom node counts, those inside functions
too (a lazy import is still a dependency), relative imports resolved. A module belongs to a unit: its top-level
subpackage (`fc_jax.data`) or top-level module (`fc_jax.kv_cache`). The rules:
(a) `fc_jax.data*` imports nothing from `fc_jax.training*` or `fc_jax.eval*`;
(b) no library module imports a CLI module (`CLI_MODULES`, and every `__main__`);
(c) no cycle between units.
"""

from __future__ import annotations

import ast
import dataclasses
import textwrap
from pathlib import Path

import pytest

import fc_jax

PACKAGE = "fc_jax"
PACKAGE_DIR = Path(fc_jax.__file__).resolve().parent

# Entry points run as `python -m ...`; any module named `__main__` is one too (`is_cli`).
CLI_MODULES = frozenset({"fc_jax.train", "fc_jax.generate", "fc_jax.sample", "fc_jax.export", "fc_jax.serve"})

# (importer prefix, forbidden imported prefixes)
FORBIDDEN = (("fc_jax.data", ("fc_jax.training", "fc_jax.eval")),)


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. fc_jax.data.curate.run
    target: str  # imported module (or package), e.g. fc_jax.vlm
    file: str  # path relative to the package's parent
    line: int
    code: str  # the import statement

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code}"


def module_name(path: Path, root: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def collect_imports(root: Path = PACKAGE_DIR, package: str = PACKAGE) -> list[Edge]:
    """Every import of a `package` module by a module under `root` (the package's folder)."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root, package): f for f in files}
    edges = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(root.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    if node.level - 1 > len(here) - 1:
                        raise AssertionError(f"{rel}:{node.lineno}: relative import beyond the package")
                    base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            code = ast.unparse(node)
            edges += [Edge(name, t, rel, node.lineno, code) for t in dict.fromkeys(targets) if _within(t, package)]
    return edges


def unit(module: str) -> str:
    """fc_jax.data.curate.run -> fc_jax.data; fc_jax.kv_cache -> fc_jax.kv_cache; fc_jax -> fc_jax."""
    return ".".join(module.split(".")[:2])


def is_cli(module: str, cli_modules=CLI_MODULES) -> bool:
    return module in cli_modules or module.rsplit(".", 1)[-1] == "__main__"


def forbidden_imports(edges: list[Edge], rules=FORBIDDEN) -> list[str]:
    return [f"{e}  ({e.source} -> {e.target}: {src} must not import {bad})"
            for e in edges for src, forbidden in rules if _within(e.source, src)
            for bad in forbidden if _within(e.target, bad)]


def cli_imports(edges: list[Edge], cli_modules=CLI_MODULES) -> list[str]:
    return [f"{e}  (library module {e.source} imports the CLI module {e.target})"
            for e in edges if not is_cli(e.source, cli_modules) and is_cli(e.target, cli_modules)]


def unit_cycles(edges: list[Edge]) -> list[str]:
    """One cycle per strongly connected group of units (Tarjan), each step shown with an import that makes it."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        a, b = unit(e.source), unit(e.target)
        if a != b and "." in b:  # the top-level package itself (its __init__ runs with any submodule): not a unit
            graph.setdefault(a, {}).setdefault(b, e)
            graph.setdefault(b, {})
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    reports = []
    for group in groups:
        start = min(group)
        path, seen = [start], {start}
        while True:  # walk inside the group until a unit repeats: that closes a cycle
            nxt = next(w for w in sorted(graph[path[-1]]) if w in group)
            if nxt in seen:
                cycle = path[path.index(nxt):] + [nxt]
                break
            path.append(nxt)
            seen.add(nxt)
        steps = "\n".join(f"    {a} -> {b}: {graph[a][b]}" for a, b in zip(cycle, cycle[1:]))
        reports.append(f"cycle {' -> '.join(cycle)}:\n{steps}")
    return reports


@pytest.fixture(scope="module")
def edges():
    return collect_imports()


def test_the_walker_sees_imports(edges):
    """Guards against a vacuous pass: known imports of the real package are found and resolved."""
    pairs = {(e.source, e.target) for e in edges}
    assert ("fc_jax.kv_cache", "fc_jax.models.dit") in pairs  # `from fc_jax.models import dit`
    assert ("fc_jax.sampling.streaming", "fc_jax.kv_cache") in pairs  # `from fc_jax import images, kv_cache`
    assert ("fc_jax.models.dit", "fc_jax.models.attention") in pairs
    assert len({e.file for e in edges}) > 50 and len(edges) > 200
    assert "fc_jax.models" in {unit(e.target) for e in edges if unit(e.source) == "fc_jax.kv_cache"}


def test_the_checks_catch_violations(tmp_path):
    """The walker and the three checks on a throwaway package that breaks every rule."""
    root = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "cli.py": "import pkg.lib\n",
        "lib.py": "def f():\n    from . import cli\n",  # a lazy, relative import of a CLI module
        "a/__init__.py": "from .inner import x\n",
        "a/inner.py": "from ..b import thing\nx = 1\n",
        "b/__init__.py": "",
        "b/thing.py": "def g():\n    import pkg.a.inner\n",
        "tool/__main__.py": "from pkg import lib\n",
        "data/__init__.py": "from pkg.a import inner\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    found = collect_imports(root, "pkg")
    assert {(e.source, e.target, e.line) for e in found} == {
        ("pkg.cli", "pkg.lib", 1), ("pkg.lib", "pkg.cli", 2), ("pkg.a", "pkg.a.inner", 1),
        ("pkg.a.inner", "pkg.b.thing", 1), ("pkg.b.thing", "pkg.a.inner", 2), ("pkg.tool.__main__", "pkg.lib", 1),
        ("pkg.data", "pkg.a.inner", 1)}
    assert [e.file for e in found if e.source == "pkg.lib"] == ["pkg/lib.py"]
    cli = cli_imports(found, frozenset({"pkg.cli"}))
    assert len(cli) == 1 and cli[0].startswith("pkg/lib.py:2: from . import cli")
    assert cli_imports([Edge("pkg.lib", "pkg.tool.__main__", "x", 1, "")], frozenset())  # __main__ by name
    assert forbidden_imports(found, (("pkg.data", ("pkg.a",)),))[0].startswith("pkg/data/__init__.py:1:")
    cycles = unit_cycles(found)
    assert len(cycles) == 2 and all(c.startswith("cycle ") for c in cycles)
    assert any("pkg.a -> pkg.b -> pkg.a" in c and "pkg/b/thing.py:2: import pkg.a.inner" in c for c in cycles)
    assert any("pkg.cli -> pkg.lib -> pkg.cli" in c for c in cycles)


def test_data_imports_neither_training_nor_eval(edges):
    bad = forbidden_imports(edges)
    assert not bad, "fc_jax.data must not depend on training or eval:\n" + "\n".join(bad)


def test_no_library_module_imports_a_cli(edges):
    bad = cli_imports(edges)
    assert not bad, "CLI modules are entry points only:\n" + "\n".join(bad)


def test_no_cycle_between_units(edges):
    cycles = unit_cycles(edges)
    assert not cycles, "units must import one way:\n" + "\n".join(cycles)
