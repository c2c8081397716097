"""Import time of ``tdhook_rl`` over ``torchrl`` alone, and installed size over the runtime
dependencies.

Each import is timed in a fresh interpreter (``python -c "import torchrl"``, timed inside
the process around the import statement), alternating the two. Sizes add up the files each
installed distribution lists in its metadata (for an editable install of tdhook-rl, the
package folders it maps: ``tdhook_rl/``, ``envs/``, ``agents/``, caches excluded); the
runtime dependencies are the closure of tdhook-rl's requirements without extras.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import (
    BenchmarkResult,
    CaseResult,
    ContestantResult,
    RunConfig,
    Timing,
    Tolerance,
)

NAME = "footprint"
MODULES = ("torchrl", "tdhook_rl")


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _dist_bytes(dist: md.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        if "__pycache__" in file.parts:
            continue
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_closure(root: str = "tdhook-rl") -> list[md.Distribution]:
    """Installed distributions ``root`` needs at run time (requirements without extras)."""
    seen: dict[str, md.Distribution] = {}
    todo = [_name(r) for r in md.requires(root) or [] if "extra ==" not in r]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist
        todo += [_name(r) for r in dist.requires or [] if "extra ==" not in r]
    return list(seen.values())


def own_bytes() -> int:
    """Installed size of tdhook_rl's own packages: the files under ``tdhook_rl`` and its
    mapped ``envs``/``agents`` folders, each counted once (they nest in a wheel install)."""
    files: set[Path] = set()
    for package in ("tdhook_rl", "tdhook_rl.envs", "tdhook_rl.agents"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            folder = Path(spec.origin).parent
            files |= {p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return sum(p.stat().st_size for p in files)


def run(config: RunConfig) -> BenchmarkResult:
    """Import times (``repeats`` fresh processes each) and installed sizes."""
    repeats = 2 if config.quick else 9
    samples: dict[str, list[float]] = {m: [] for m in MODULES}
    import_seconds("tdhook_rl")  # warm the file system cache and the bytecode caches
    for r in range(repeats):
        for module in MODULES[r % 2 :] + MODULES[: r % 2]:
            samples[module].append(import_seconds(module))
    deps = runtime_closure()
    dep_bytes = sum(_dist_bytes(d) for d in deps)
    contestants = [ContestantResult(m, "ok", timing=Timing(samples[m])) for m in MODULES]
    own = own_bytes()
    contestants[1].extras.update(
        {
            "own MiB": own / 2**20,
            "runtime deps MiB": dep_bytes / 2**20,
            "own / deps": own / dep_bytes,
        }
    )
    names = sorted(f"{d.metadata['Name']} {d.version}" for d in deps)
    return BenchmarkResult(
        name=NAME,
        title="Footprint: import time and installed size",
        description=(
            "`median ms`: time of the import statement in a fresh interpreter (`import"
            " tdhook_rl` imports torchrl, tensordict and torch too, so its `/ torchrl` ratio is"
            " the whole cost of adding tdhook_rl). `own MiB`: tdhook_rl's installed files"
            " (checkpoints included); `runtime deps MiB`: all its runtime dependencies"
            " together (torch, torchrl, ...)."
        ),
        settings={"repeats": repeats, "runtime dependencies": ", ".join(names)},
        reference="torchrl",
        focus=None,
        tolerance=Tolerance(),
        cases=[CaseResult("import", {}, contestants)],
        notes=[],
    )
