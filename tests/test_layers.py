"""The package's layers import one way: core <- data <- training <- records <- workflows <- cli and widgets, with no circles.

Read from the source with ast (lazy imports inside functions included), so a
wrong-way import fails here even if no test happens to execute it.
"""

import ast
from pathlib import Path

import mnist_lib

PACKAGE = Path(mnist_lib.__file__).parent
LAYERS = ["core", "data", "training", "records", "workflows"]  # each may import only itself and those before it


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The mnist_lib modules `path` imports, as dotted names (`from . import x` resolved to the module x)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("mnist_lib"):
                continue
            for alias in node.names:  # `from .core import datasets` imports the module core.datasets
                sub = f"{target}.{alias.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnist_lib")}
    return found - {me}


def layer_of(module: str) -> int:
    """0 for core ... 4 for workflows; 5 for the package's top level (cli, __init__, __main__)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else len(LAYERS)


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_layer_folder_or_is_the_interface():
    top = {m for m in GRAPH if layer_of(m) == len(LAYERS)}
    assert top == {"mnist_lib", "mnist_lib.__main__", "mnist_lib.cli", "mnist_lib.widgets"}  # the interfaces: command line, JupyterLab


def test_no_module_imports_a_layer_above_its_own():
    wrong = [
        f"{m} ({LAYERS[layer_of(m)]}) imports {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if layer_of(m) < len(LAYERS) and layer_of(t) > layer_of(m)
    ]
    assert not wrong, wrong


def test_no_import_circles():
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(GRAPH.get(m, ())):
            if t == "mnist_lib" or t not in GRAPH:  # the package root re-exports; it is nobody's dependency
                continue
            assert state.get(t) != "open", "import circle: " + " -> ".join([*path, m, t])
            if t not in state:
                visit(t, [*path, m])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


def test_the_reader_is_independent():
    """The checks above see imports at all: the known edges are found."""
    assert "mnist_lib.core.datasets" in GRAPH["mnist_lib.core.config"]  # `from . import datasets`
    assert "mnist_lib.records.plots" in GRAPH["mnist_lib.workflows.experiment"]  # `from ..records import plots`
    assert "mnist_lib.workflows.sweep" in GRAPH["mnist_lib.cli"]  # a lazy import inside a function
