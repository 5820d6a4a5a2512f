"""The package's shape: no import cycles, no private name imported across modules, modules of readable size.

The graph is built from the source with ``ast`` (every import, also those inside functions), so a lazy import
that closes a cycle counts as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "infopt"
MAX_LINES = 520


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_edges(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the infopt modules it imports; and every private name imported from another module."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                       for stmt in node.body for inner in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run
                continue
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node.level, node.module)
                targets = []
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        targets.append((submodule, None))
                    else:
                        targets.append((source, alias.name))
            else:
                continue
            for target, imported in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if imported and imported.startswith("_") and not imported.startswith("__"):
                    private.append(f"{name} imports {imported} from {target}")
                # a package's __init__ imported on the way to a submodule is not an edge of its own
                edges[name].add(target)
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _without_facades(edges: dict[str, set[str]], modules: dict[str, Path]) -> dict[str, set[str]]:
    """A package's ``__init__`` that re-exports its submodules is a facade for callers outside it: an edge from a
    submodule up to its own package (or an ancestor) is what Python runs anyway, so it is not a cycle of ours."""
    cleaned = {}
    for name, targets in edges.items():
        cleaned[name] = {t for t in targets if not (modules[t].name == "__init__.py" and name.startswith(t + "."))}
    return cleaned


def test_the_package_has_no_import_cycle():
    modules = _modules()
    edges, _ = import_edges(modules)
    cycle = find_cycle(_without_facades(edges, modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_is_imported_across_modules():
    _, private = import_edges(_modules())
    assert private == []


def test_no_module_is_much_over_500_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in long.items() if n > MAX_LINES} == {}


def test_the_cycle_finder_finds_a_cycle_and_a_private_import(tmp_path):
    package = tmp_path / "infopt"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from infopt.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import _hidden\n")
    modules = {_module_name_in(tmp_path, p): p for p in package.rglob("*.py")}
    edges, private = import_edges(modules)
    assert find_cycle(edges) in (["infopt.a", "infopt.sub.b", "infopt.a"], ["infopt.sub.b", "infopt.a", "infopt.sub.b"])
    assert private == ["infopt.sub.b imports _hidden from infopt.a"]


def _module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: The layers, lowest first: a module may import its own layer and the ones before it, never a later one.
LAYERS = (
    ("foundation", ("infopt.errors", "infopt.names", "infopt.devices", "infopt.env", "infopt.determinism",
                    "infopt.presets", "infopt.flops")),
    ("models", ("infopt.models",)),
    ("data", ("infopt.data",)),
    ("files", ("infopt.layout", "infopt.results")),
    ("measure", ("infopt.measure",)),
    ("analyze", ("infopt.analyze",)),
    ("optimize", ("infopt.optimize",)),
    ("serve", ("infopt.serve",)),
    ("report", ("infopt.report",)),
    ("run", ("infopt.run",)),
    ("entry points", ("infopt", "infopt.notebook")),
)


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS and ARCHITECTURE.md"
    return best[0]


def test_no_module_imports_a_later_layer():
    edges, _ = import_edges(_modules())
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))
    assert upward == []
