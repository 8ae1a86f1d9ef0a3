"""The library core stays a staircase (STYLE.md habits): no import circle between its modules, and no private name
imported from another file. Checked on the source text, so a new knot fails here, not in a review."""

import ast
from pathlib import Path

import torchstn

SRC = Path(torchstn.__file__).resolve().parent
CORE = ["_checks", "_tracing", "errors", "coords", "points", "export", "functional", "transforms", "nn"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_files() -> list[Path]:
    files = []
    for name in CORE:
        p = SRC / name
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]
    return files


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``from torchstn... import ...`` in ``path``, imports inside functions included."""
    return [(node.module, [a.name for a in node.names]) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchstn")]


def test_no_private_name_crosses_a_core_file():
    crossing = [f"{_module_name(p)} imports {n} from {m}" for p in _core_files() for m, names in _imports(p)
                for n in names if n.startswith("_") and not n.startswith("__")]
    assert not crossing, crossing


def test_no_import_circle_in_the_core():
    graph = {_module_name(p): {m for m, _ in _imports(p)} for p in _core_files()}  # imports on use count too
    done, stack = set(), []

    def visit(module: str) -> None:
        if module in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(module):] + [module]))
        if module in done or module not in graph:
            return
        stack.append(module)
        for dep in graph[module]:
            if not dep.startswith(module + "."):  # a package importing its own submodules is its re-export
                visit(dep)
        stack.pop()
        done.add(module)

    for module in graph:
        visit(module)
