"""The house's import rules (docs/architecture.md), checked on the source text so that a new knot fails here, not in
a review. Every ``from torchstn... import`` and ``import torchstn...`` counts, imports inside functions included.

* Rooms sit on floors: a module imports only its own room or rooms on lower floors (no upward import). The library
  (everything outside ``torchstn.experiments``) therefore never imports the reproduction wing.
* An experiment (``torchstn.experiments.<name>`` other than the wing's shared rooms) never imports another one.
* No import circle between modules, and no private name imported from another file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torchstn

SRC = Path(torchstn.__file__).resolve().parent

#: Rooms from the ground up; a module's room is the longest prefix of its dotted name listed here.
FLOORS: list[tuple[str, ...]] = [
    ("torchstn.errors",),
    ("torchstn._checks", "torchstn._tracing", "torchstn._io"),
    ("torchstn._registry",),
    ("torchstn.coords",),
    ("torchstn.functional",),
    ("torchstn.transforms",),
    ("torchstn.points", "torchstn.nn"),
    ("torchstn.data", "torchstn.models"),
    ("torchstn",),  # the package's __init__: the library's front door
    ("torchstn.export",),
    ("torchstn.experiments.viz",),
    ("torchstn.experiments.engine",),
    ("torchstn.experiments.data_figure", "torchstn.experiments.specs"),  # specs: what the MNIST spec modules share
    ("torchstn.experiments.<experiment>",),
    ("torchstn.experiments.reproduce", "torchstn.experiments.demo", "torchstn.experiments"),
    ("torchstn.experiments.cli",),
    ("torchstn.__main__", "torchstn.train", "torchstn.viz"),  # the entry point; deprecated spellings of the wing
]
#: The wing's shared rooms; every other ``torchstn.experiments.X`` is one experiment.
WING_SHARED = {"engine", "viz", "data_figure", "specs", "reproduce", "demo", "cli", "configs"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = sorted(SRC.rglob("*.py"))
MODULES = {_module_name(p): p for p in FILES}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every torchstn import in ``path``; ``from torchstn.x import y`` with ``y`` a
    submodule counts as an import of ``torchstn.x.y``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torchstn":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub, []) if sub in MODULES else (node.module, [a.name]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "torchstn"]
    return out


def experiment_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "experiments" and parts[2] not in WING_SHARED:
        return parts[2]
    return None


def room(module: str) -> tuple[str, int]:
    if experiment_of(module):
        return ".".join(module.split(".")[:3]), FLOORS.index(("torchstn.experiments.<experiment>",))
    best = ("", -1)
    for floor, rooms in enumerate(FLOORS):
        for r in rooms:
            if (module == r or module.startswith(r + ".")) and len(r) > len(best[0]):
                best = (r, floor)
    assert best[1] >= 0, f"{module} is in no room of FLOORS: add it there"
    return best


def test_every_module_has_a_room():
    for module in MODULES:
        room(module)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` (module -> what it imports) that go to a higher floor or sideways to another room."""
    found = []
    for module, deps in graph.items():
        own, floor = room(module)
        for dep in deps:
            r, f = room(dep)
            if f > floor or (f == floor and r != own):  # rooms on one floor are independent of each other
                found.append(f"{module} (floor {floor}) imports {dep} (floor {f})")
    return found


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of ``graph``, or ``None``."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in stack:
            return stack[stack.index(module) :] + [module]
        if module in done or module not in graph:
            return None
        stack.append(module)
        for dep in graph[module]:
            if not dep.startswith(module + "."):  # a package importing its own submodules is its re-export
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        done.add(module)
        return None

    for module in graph:
        found = visit(module)
        if found:
            return found
    return None


GRAPH = {m: {d for d, _ in _imports(p)} for m, p in MODULES.items()}


def test_no_upward_import():
    found = upward_imports(GRAPH)
    assert not found, "\n".join(found)


def test_the_library_never_imports_the_wing():
    wing = ("torchstn.experiments", "torchstn.train", "torchstn.viz", "torchstn.__main__")
    crossing = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if not m.startswith(wing)
        for dep in deps
        if dep.startswith(wing)
    ]
    assert not crossing, crossing


def test_no_experiment_imports_another():
    crossing = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if experiment_of(m)
        for dep in deps
        if experiment_of(dep) and experiment_of(dep) != experiment_of(m)
    ]
    assert not crossing, crossing


#: Knots being untied now (issue 15); each entry must still exist, so a fix also shortens this list.
KNOWN_PRIVATE: set[str] = set()
KNOWN_CIRCLES: set[tuple[str, str]] = set()


def test_no_private_name_crosses_a_file():
    crossing = {
        f"{m} imports {n} from {dep}"
        for m, p in MODULES.items()
        for dep, names in _imports(p)
        for n in names
        if n.startswith("_") and not n.startswith("__") and dep != m
    }
    assert crossing == KNOWN_PRIVATE, "\n".join(sorted(crossing ^ KNOWN_PRIVATE))


def test_no_import_circle():
    graph = {m: {d for d in deps if (m, d) not in KNOWN_CIRCLES} for m, deps in GRAPH.items()}
    found = circle(graph)
    assert found is None, "import circle: " + " -> ".join(found or [])
    for a, b in KNOWN_CIRCLES:
        assert circle({a: GRAPH[a], b: GRAPH[b]}), f"{a} <-> {b} is untied: drop it from KNOWN_CIRCLES"


def test_the_checks_catch_a_knot():
    """The checks above can fail: made-up upward, sideways and circular imports are reported."""
    assert upward_imports({"torchstn.functional.sample": {"torchstn.experiments.engine.steps"}})
    assert upward_imports({"torchstn.data.mnist": {"torchstn.models.registry"}})  # same floor, another room
    assert not upward_imports({"torchstn.experiments.svhn.data": {"torchstn.experiments.engine.steps"}})
    assert experiment_of("torchstn.experiments.svhn.data") == "svhn"
    assert experiment_of("torchstn.experiments.engine.steps") is None
    assert circle({"torchstn.a": {"torchstn.b"}, "torchstn.b": {"torchstn.c"}, "torchstn.c": {"torchstn.a"}})
    assert circle({"torchstn.a": {"torchstn.a.b"}, "torchstn.a.b": set()}) is None
