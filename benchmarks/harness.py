"""Timing, agreement checks, environment capture and report writing for the benchmarks.

Every benchmark returns a :class:`BenchmarkResult`: a list of cases (one setting each), and
for every case one :class:`ContestantResult` per contestant, with its timing and its
agreement with the reference contestant. ``benchmarks.report`` turns a list of them into
``RESULTS.md`` (one table per benchmark) and ``results.json`` (every raw sample).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

# A contestant is a zero-argument callable doing the whole job once and returning the
# attributions stacked as [n_targets, batch, *obs_shape].
Operation = Callable[[], torch.Tensor]

PACKAGES = ("torch", "tensordict", "torchrl", "captum", "tdhook", "tdhook-rl", "numpy")


@dataclass
class Tolerance:
    """Elementwise check ``|a - ref| <= atol + rtol * |ref|``, with ``atol`` relative to scale.

    ``atol = atol_scaled * max|ref|``: float32 attributions summed over integration steps
    in another order differ by a few ulps of the largest attribution, so an absolute floor
    tied to that scale is the meaningful one; ``rtol`` covers the large entries.
    """

    atol_scaled: float = 1e-5
    rtol: float = 1e-4


@dataclass
class Agreement:
    """How far a contestant's attributions are from the reference's."""

    max_abs_error: float
    max_rel_error: float  # max |a - ref| / max |ref|: the error relative to the attribution scale
    scale: float  # max |ref|
    passed: bool
    shape_ok: bool = True


@dataclass
class Timing:
    """Wall-clock seconds of repeated runs, after warm-up."""

    samples_s: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def min_s(self) -> float:
        return min(self.samples_s)

    @property
    def max_s(self) -> float:
        return max(self.samples_s)


@dataclass
class ContestantResult:
    """One contestant in one case: ``status`` is ``ok``, ``skipped`` or ``error``."""

    name: str
    status: str
    note: str = ""
    timing: Timing | None = None
    agreement: Agreement | None = None
    # other measurements shown as extra columns (e.g. peak memory, transitions per second)
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class CaseResult:
    """One setting of a benchmark (e.g. 17 targets, 9 inputs) and all its contestants."""

    label: str
    params: dict[str, Any]
    contestants: list[ContestantResult]


@dataclass
class BenchmarkResult:
    """What a benchmark function returns."""

    name: str
    title: str
    description: str
    settings: dict[str, Any]
    reference: str
    tolerance: Tolerance
    cases: list[CaseResult]
    notes: list[str] = field(default_factory=list)
    focus: str | None = None  # contestant summarised against its peers above the full table


@dataclass
class RunConfig:
    """Options shared by every benchmark of one run."""

    device: torch.device
    quick: bool
    seed: int = 0
    time_budget_s: float | None = None  # benchmarks with many cases stop starting new ones


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    operations: Mapping[str, Operation],
    warmup: int,
    repeats: int,
    device: torch.device,
    limits: Mapping[str, int] | None = None,
    errors: dict[str, str] | None = None,
) -> dict[str, Timing]:
    """Time each operation ``repeats`` times after ``warmup`` calls, interleaving them.

    Round ``r`` runs every operation once, starting from a rotating position, so that a
    slow drift of the machine (another job, frequency scaling) spreads over all
    contestants instead of landing on whichever ran last. ``limits[name]`` caps the timed
    calls of a slow contestant (it then skips the extra warm-up: its first call was one).
    An operation that raises is dropped from the timing; its message goes into ``errors``.
    """
    names = list(operations)
    limits = dict(limits or {})
    failed: dict[str, str] = {}
    for _ in range(warmup):
        for name in names:
            if name not in limits and name not in failed:
                try:
                    operations[name]()
                except Exception as exc:
                    failed[name] = f"{type(exc).__name__} in warm-up: {exc}"
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if name in failed or len(samples[name]) >= limits.get(name, repeats):
                continue
            start = time.perf_counter()
            try:
                operations[name]()
                synchronize(device)
            except Exception as exc:  # one broken contestant never stops the others
                failed[name] = f"{type(exc).__name__} while timed: {exc}"
                continue
            samples[name].append(time.perf_counter() - start)
    if errors is not None:
        errors.update(failed)
    return {name: Timing(s) for name, s in samples.items() if name not in failed}


def compare(actual: torch.Tensor, reference: torch.Tensor, tolerance: Tolerance) -> Agreement:
    """Max absolute and scale-relative error of ``actual`` against ``reference``."""
    if actual.shape != reference.shape:
        nan = float("nan")
        return Agreement(nan, nan, nan, passed=False, shape_ok=False)
    actual = actual.detach().double().cpu()
    reference = reference.detach().double().cpu()
    error = (actual - reference).abs()
    scale = float(reference.abs().max())
    atol = tolerance.atol_scaled * scale
    passed = bool((error <= atol + tolerance.rtol * reference.abs()).all())
    max_abs = float(error.max())
    return Agreement(max_abs, max_abs / scale if scale > 0 else max_abs, scale, passed)


def run_case(
    label: str,
    params: dict[str, Any],
    builders: Mapping[str, Callable[[], Operation]],
    reference: str,
    tolerance: Tolerance,
    warmup: int,
    repeats: int,
    device: torch.device,
    budget_s: float | None = None,
) -> CaseResult:
    """Build every contestant, check it against ``reference``, then time the ones that work.

    ``budget_s`` bounds each contestant's timed calls: one whose first call took ``t``
    seconds is timed ``max(1, min(repeats, budget_s // t))`` times (for the slow peers
    whose single call takes seconds, e.g. captum at batch 1024).

    The first call of each contestant, whose output is compared with the reference's, is
    also its first warm-up call; ``warmup`` more follow before timing. A builder that raises
    ``ContestantUnavailable`` is reported as skipped; any other exception at build or first
    call is reported as an error (the message is kept) so one broken contestant never hides
    the others.
    """
    operations: dict[str, Operation] = {}
    results: dict[str, ContestantResult] = {}
    outputs: dict[str, torch.Tensor] = {}
    limits: dict[str, int] = {}
    for name, build in builders.items():
        try:
            operation = build()
            start = time.perf_counter()
            outputs[name] = operation()
            synchronize(device)
            first = time.perf_counter() - start
            if budget_s is not None and first * (warmup + repeats) > budget_s:
                limits[name] = max(1, min(repeats, int(budget_s // first)))
            operations[name] = operation
            results[name] = ContestantResult(name, "ok")
        except ContestantUnavailable as exc:
            results[name] = ContestantResult(name, "skipped", f"not available: {exc}")
        except Exception as exc:
            results[name] = ContestantResult(name, "error", f"{type(exc).__name__}: {exc}")
    if reference in outputs:
        for name, output in outputs.items():
            results[name].agreement = compare(output, outputs[reference], tolerance)
    outputs.clear()
    errors: dict[str, str] = {}
    timings = time_interleaved(operations, warmup, repeats, device, limits, errors)
    for name, message in errors.items():
        results[name].status = "error"
        results[name].note = message
    for name, timing in timings.items():
        results[name].timing = timing
    return CaseResult(label, params, [results[name] for name in builders])


class ContestantUnavailable(RuntimeError):
    """Raised by a contestant builder whose library cannot be imported."""


# --- environment ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device, root: Path) -> dict[str, Any]:
    """Machine, library versions and git commit, for the report header."""
    env: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {package: _version(package) for package in PACKAGES},
        "git_commit": _git_commit(root),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
