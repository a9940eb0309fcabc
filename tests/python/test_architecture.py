"""The package's shape, read from its source: modules talk through public names, and no two
modules import each other at load time.

Private access. A name that starts with one underscore (not a dunder) belongs to the module
that defines it. Another module of `pydp_r` reaching it is a violation, in either form:

- `from pydp_r.x import _name`, or the relative `from .x import _name`;
- `module._name`, where `module` is bound to a `pydp_r` module by an import (`import pydp_r.x
  as module`, `from pydp_r import x`, `from pydp_r.x import y` where `y` is a module), or is a
  dotted path from one (`pydp_r.x._name`).

Modules whose own name is private (`pydp_r._checks`, `pydp_r._versions`, `pydp_r._r_hints`,
`pydp_r.tensorflow_privacy._lazy`) are private to the package, not to themselves: importing
such a module, or a public name from it (`from pydp_r._checks import check_count`), is fine.
Attribute access on objects other than modules (`optimizer._name`) cannot be resolved from
the source and is not checked. Exempt: `pydp_r/_keras_seam.py` (the one door to Keras' and
TensorFlow's private parts, which are not `pydp_r` modules anyway) and the tests.

Import circles. An edge goes from a module to each `pydp_r` module it imports at load time:
statements at module level, including inside module-level `if`/`try` blocks, but not inside
`if TYPE_CHECKING:` blocks, which never run. `from pydp_r.x import y` is an edge to
`pydp_r.x.y` when that is a module, else to `pydp_r.x`. A package's `__init__` running
before its submodules is Python's doing, not an edge. Imports inside functions are lazy and
are allowed to close a circle: they run after both modules have loaded, which is how a
module that must come second asks for the first (and how `import pydp_r` stays cheap). A
strongly connected component of more than one module is an import circle.

Violations in files this test's owner may not edit are listed in `KNOWN_VIOLATIONS`: the test
passes with them, fails on any new one, and fails on an entry that no longer occurs, so that
whoever fixes one also removes its entry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "pydp_r"
SEAM = "pydp_r/_keras_seam.py"

# Known violations, each to be removed by the owner of its file when fixed (and then this
# test fails until the entry goes). Format: "<file>: <what it reaches>" for private access,
# "circle: <modules, sorted, joined by ' <-> '>" for import circles.
KNOWN_VIOLATIONS: set[str] = set()


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _relative_path(module: str) -> str:
    return MODULES[module].relative_to(PACKAGE_ROOT.parent).as_posix()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, with a relative one resolved against `module`."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _private_access(module: str, tree: ast.Module) -> list[str]:
    """The private names of other pydp_r modules that `module` reaches."""
    found = []
    aliases: dict[str, str] = {}  # local name -> pydp_r module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pydp_r":
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases["pydp_r"] = "pydp_r"
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.split(".")[0] != "pydp_r":
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in MODULES:
                    aliases[alias.asname or alias.name] = target
                elif _is_private(alias.name) and source != module:
                    found.append(f"from {source} import {alias.name}")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        dotted = _dotted_module(node.value, aliases)
        if dotted is None or dotted == module or f"{dotted}.{node.attr}" in MODULES:
            continue
        found.append(ast.unparse(node))
    return found


def _dotted_module(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The pydp_r module an expression such as `x` or `pydp_r.x.y` names, if it names one."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted_module(node.value, aliases)
        if base is not None and f"{base}.{node.attr}" in MODULES:
            return f"{base}.{node.attr}"
    return None


def _load_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module loads (see the module docstring)."""
    statements: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                statements.append(node)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return statements


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for node in _load_time_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.split(".")[0] == "pydp_r")
                continue
            source = _absolute(module, node)
            if source.split(".")[0] != "pydp_r":
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                edges.add(target if target in MODULES else source)
        graph[module] = {edge for edge in edges if edge in MODULES and edge != module}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def connect(node: str) -> None:
        index[node] = lowest[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                lowest[node] = min(lowest[node], lowest[successor])
            elif successor in on_stack:
                lowest[node] = min(lowest[node], index[successor])
        if lowest[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return circles


def private_access_violations() -> set[str]:
    violations = set()
    for module, path in MODULES.items():
        if _relative_path(module) == SEAM:
            continue
        for access in _private_access(module, ast.parse(path.read_text(), str(path))):
            violations.add(f"{_relative_path(module)}: {access}")
    return violations


def circle_violations() -> set[str]:
    return {"circle: " + " <-> ".join(circle) for circle in _circles(_import_graph())}


def test_modules_reach_each_other_only_through_public_names():
    new = private_access_violations() - KNOWN_VIOLATIONS
    assert not new, (
        "Private names used across modules (make the name public, or move it where both "
        "can import it, e.g. pydp_r/_checks.py for argument checks):\n" + "\n".join(sorted(new))
    )


def test_no_import_circles_at_load_time():
    new = circle_violations() - KNOWN_VIOLATIONS
    assert not new, (
        "Modules that import each other when they load (break the circle, or make one of "
        "the imports lazy, inside the function that needs it):\n" + "\n".join(sorted(new))
    )


def test_every_known_violation_still_occurs():
    fixed = KNOWN_VIOLATIONS - private_access_violations() - circle_violations()
    assert not fixed, "Fixed, so remove from KNOWN_VIOLATIONS:\n" + "\n".join(sorted(fixed))


# --- the scanner on small examples, so that the rules above are the ones enforced ----------


def _scan(source: str, module: str = "pydp_r.planner") -> list[str]:
    return _private_access(module, ast.parse(source))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from pydp_r import accounting\naccounting._epsilon(1)", ["accounting._epsilon"]),
        ("import pydp_r.accounting as a\na._num(1)", ["a._num"]),
        ("import pydp_r\npydp_r.accounting._x", ["pydp_r.accounting._x"]),
        ("from pydp_r.accounting import _epsilon", ["from pydp_r.accounting import _epsilon"]),
        ("from .accounting import _epsilon", ["from pydp_r.accounting import _epsilon"]),
        ("from pydp_r.audit import bounds\nbounds._check(1)", ["bounds._check"]),
        # Public names, private modules, dunders, non-module objects, one's own names: fine.
        ("from pydp_r._checks import check_count", []),
        ("from pydp_r import _checks as checks\nchecks.check_delta(1)", []),
        ("import pydp_r\npydp_r._checks.check_count", []),
        ("from pydp_r import accounting\naccounting.__doc__", []),
        ("optimizer._noised_average()", []),
        ("from pydp_r.planner import _default_batch_sizes", []),
        ("import numpy\nnumpy._core", []),
    ],
)
def test_scanner_finds_exactly_cross_module_private_access(source, expected):
    assert _scan(source) == expected


def test_scanner_finds_circles_through_load_time_imports_only():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(graph) == [["a", "b", "c"]]
    lazy = ast.parse(
        "import pydp_r.x\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import pydp_r.y\n"
        "try:\n    import pydp_r.z\nexcept ImportError:\n    pass\n"
        "def f():\n    import pydp_r.w\n"
    )
    names = [alias.name for node in _load_time_imports(lazy) for alias in node.names]
    assert names == ["pydp_r.x", "TYPE_CHECKING", "pydp_r.z"]
