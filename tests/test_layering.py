"""The package's layering: no import cycles between its modules, and no module imports a layer
above its own at import time (imports inside functions, made when a job runs, are allowed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = {"tdhook_rl": ROOT / "tdhook_rl", "tdhook_rl.envs": ROOT / "envs"}
PACKAGES["tdhook_rl.agents"] = ROOT / "agents"
#: lower layers first; a module may import its own layer and the ones before it
LAYERS = [
    ("core",),
    ("targets",),
    ("attribution",),
    ("attributed",),
    ("latent",),
    ("probes", "interventions", "evaluate"),
    ("metrics", "concepts"),
    ("viz",),
    ("callbacks",),
    ("envs", "agents", "report"),
    ("cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def top_level_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The tdhook_rl modules ``path`` imports when it is imported (not under TYPE_CHECKING,
    not inside functions)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        out |= {n for n in names if n in known}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: top_level_imports(p, known) - {m} for m, p in known.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(edges[module]):
            if state.get(dep) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path[path.index(dep) :], dep])}")
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_no_upward_imports():
    upward = [
        f"{module} -> {dep}"
        for module, deps in graph().items()
        for dep in deps
        if layer(module) in RANK and layer(dep) in RANK and RANK[layer(dep)] > RANK[layer(module)]
    ]
    assert not upward, f"modules importing a higher layer at import time: {upward}"


def test_the_checks_see_the_package():
    edges = graph()
    assert "tdhook_rl.attributed" in edges["tdhook_rl.report.double_pendulum"]
    assert "tdhook_rl.core.intercept" in edges["tdhook_rl.latent.recorded"]
    assert {layer(m) for m in edges} >= {"core", "latent", "report", "envs", "agents"}


def test_test_modules_have_unique_names():
    """The test folders are no packages: pytest imports each test file by its bare name, so
    two files called test_cuda.py in two folders break collection of the whole suite."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
