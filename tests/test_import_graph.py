"""The package's shape, read from its imports with `ast`: no import circles, a top level of at most nine modules (the
spine), no module importing another module's `_private` name, and the lower packages never importing the spine.

Imports inside `if TYPE_CHECKING:` blocks count too: they never run, but a circle drawn by type hints is still a
circle a reader has to follow, and it is how lower packages used to reach up for the spine's `Setup` (they now name
the narrow Protocols they read: lottery/training/spec.py, branches/spec.py, structured/spec.py). Imports inside
functions count: they run when the function does. `imports_of(path, type_only=False)` gives the runtime ones alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lottery

PACKAGE = Path(lottery.__file__).parent
SPINE = {"cli", "config", "validate", "job", "setup", "imp", "reuse", "guard"}
# The schema (config) is the bottom of the spine: every layer reads the typed settings it is given.
LOWER_MAY_IMPORT = {"config"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, type_only: bool = True) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of the file; `type_only=False` skips those under
    `if TYPE_CHECKING:`."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_only:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, [alias.name for alias in child.names]))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def edges() -> dict[str, set[str]]:
    """module -> the package modules it imports (`from a.b import c` names module a.b.c when c is a module)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names in imports_of(path):
            if not target.startswith("lottery"):
                continue
            for name in names or [None]:
                sub = f"{target}.{name}" if name else None
                graph[module].add(sub if sub in MODULES else target)
        graph[module].discard(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_the_scanner_sees_runtime_and_type_only_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport lottery.core\nfrom lottery.core import masks\n"
        "if TYPE_CHECKING:\n    from lottery.setup import Setup\n"
        "def f():\n    from lottery.data.tasks import _hidden\n"
    )
    runtime = [
        ("typing", ["TYPE_CHECKING"]),
        ("lottery.core", []),
        ("lottery.core", ["masks"]),
        ("lottery.data.tasks", ["_hidden"]),
    ]
    assert imports_of(source, type_only=False) == runtime
    assert imports_of(source) == runtime[:3] + [("lottery.setup", ["Setup"])] + runtime[3:]


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(edges()) == []


def test_top_level_holds_the_spine_only():
    top = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert top == SPINE
    assert len(top) + 1 <= 9  # with __init__.py


def test_no_module_imports_another_modules_private_names():
    offenders = [
        f"{module}: {target}.{name}"
        for module, path in MODULES.items()
        for target, names in imports_of(path)
        if target.startswith("lottery")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert offenders == []


def test_lower_packages_never_import_the_spine():
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in edges().items()
        if module.count(".") >= 2 or module.split(".")[-1] not in SPINE | {"lottery"}
        for target in targets
        if target.count(".") == 1 and target.split(".")[1] in SPINE - LOWER_MAY_IMPORT
    )
    assert offenders == []


def test_core_imports_nothing_above_it():
    outside = sorted(
        f"{module} -> {target}"
        for module, targets in edges().items()
        if module.startswith("lottery.core")
        for target in targets
        if not target.startswith("lottery.core")
    )
    assert outside == []


def test_packages_import_each_other_one_way():
    """Between packages too: the modules of one package may use another's, never both ways (branches and reports
    once did: reports drew the branches' line styles while the branches printed through reports' console)."""
    graph: dict[str, set[str]] = {}
    for module, targets in edges().items():
        package = module.split(".")[1] if "." in module else module
        graph.setdefault(package, set()).update(
            t.split(".")[1] for t in targets if "." in t and t.split(".")[1] != package
        )
    assert "console" in graph["branches"] and "branches" in graph["reports"]  # the edges this test is about
    assert cycles(graph) == []
