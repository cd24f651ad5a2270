"""No import cycle in the package, including the ones deferred imports inside functions would hide.

A function-level import of an edgebert module runs only when called, so a cycle through it never
fails at import time: it only makes the modules one knot no one can read, test or move alone.
The graph counts every import statement (module level, inside functions, under TYPE_CHECKING),
absolute or relative; `from pkg import name` imports the submodule `pkg.name` when there is one,
else `pkg` itself (so a submodule importing its own package's __init__ is an edge to it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import edgebert

PACKAGE_DIR = Path(edgebert.__file__).parent


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `module` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = node.module if not node.level else ".".join(filter(None, (base, node.module)))
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
    return targets & modules.keys()


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {module: imported(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and modules importing themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1 or module in graph[module]:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    edges = [f"  {module} -> {', '.join(sorted(graph[module] & set(component)))}" for module in component]
    return f"{len(component)} modules import each other:\n" + "\n".join(edges)


def test_the_package_has_no_import_cycle():
    graph = import_graph(package_modules())
    found = cycles(graph)
    assert not found, "import cycles (move the shared piece to where it belongs):\n" + "\n".join(
        describe(component, graph) for component in found
    )


def test_the_graph_sees_deferred_relative_and_package_imports(tmp_path):
    """The walk itself: a cycle hidden in a function, through a relative import and a package's __init__ is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from .sub import c\n")
    (package / "sub" / "__init__.py").write_text("X = 1\n")
    (package / "sub" / "c.py").write_text("def g():\n    from pkg.sub import X\n    from ..a import f\n")
    (package / "alone.py").write_text("import pkg.alone\n")
    graph = import_graph(package_modules(package))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.sub", "pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.alone"]]
