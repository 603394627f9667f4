"""The layers of docs/ARCHITECTURE.md, checked on the source: no import cycle between
polyppl's modules, and no module importing a layer below its own in the list (function-
local imports included, so none can hide a cycle)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "polyppl"
#: From the bottom up; a module may import its own layer and those before it.
LAYERS = ("errors", "spec", "models", "inference", "backends", "execution", "studies", "render", "cli")
#: Modules outside any layer: the package's lazy API and version.
FREE = {"polyppl"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """polyppl modules imported anywhere in the file (``from polyppl import __version__``
    counts as the package itself)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("polyppl")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("polyppl"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if _exists(candidate) else base)
    return found


def _exists(module: str) -> bool:
    path = SRC.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if module in FREE or len(parts) < 2:
        return None
    return LAYERS.index(parts[1])


def test_every_module_belongs_to_a_layer():
    for module in graph():
        if module not in FREE:
            assert module.split(".")[1] in LAYERS, f"{module} is in no layer of docs/ARCHITECTURE.md"


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, targets in graph().items():
        for target in targets:
            own, theirs = layer(module), layer(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} ({LAYERS[own]}) imports {target} ({LAYERS[theirs]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    edges = graph()
    # A package's __init__ importing its own submodules is how a registry is built, not a
    # cycle of dependencies: drop those edges, then look for cycles with a depth-first walk.
    edges = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in edges.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)
