"""Timing, agreement checks, environment capture and report writing for the benchmarks.

Every benchmark returns a :class:`BenchmarkResult`: a list of cases (one setting each), and
for every case one :class:`ContestantResult` per contestant, with its timing and its
agreement with the reference contestant. :func:`write_reports` turns a list of them into
``RESULTS.md`` (one table per benchmark) and ``results.json`` (every raw sample).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
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


@dataclass
class RunConfig:
    """Options shared by every benchmark of one run."""

    device: torch.device
    quick: bool
    seed: int = 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    operations: Mapping[str, Operation], warmup: int, repeats: int, device: torch.device
) -> dict[str, Timing]:
    """Time each operation ``repeats`` times after ``warmup`` calls, interleaving them.

    Round ``r`` runs every operation once, starting from a rotating position, so that a
    slow drift of the machine (another job, frequency scaling) spreads over all
    contestants instead of landing on whichever ran last.
    """
    names = list(operations)
    for _ in range(warmup):
        for name in names:
            operations[name]()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            operations[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(s) for name, s in samples.items()}


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
) -> CaseResult:
    """Build every contestant, check it against ``reference``, then time the ones that work.

    A builder that raises ``ContestantUnavailable`` is reported as skipped; any other
    exception at build or first call is reported as an error (the message is kept) so one
    broken contestant never hides the others.
    """
    operations: dict[str, Operation] = {}
    results: dict[str, ContestantResult] = {}
    outputs: dict[str, torch.Tensor] = {}
    for name, build in builders.items():
        try:
            operation = build()
            outputs[name] = operation()
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
    for name, timing in time_interleaved(operations, warmup, repeats, device).items():
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
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# --- reports -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds >= 0.01 else f"{seconds * 1e3:.3f}"


def _sci(value: float) -> str:
    return f"{value:.1e}"


def _agreement_cells(agreement: Agreement | None, reference: str, name: str) -> list[str]:
    if agreement is None:
        return ["-", "-", "-"]
    if not agreement.shape_ok:
        return ["-", "-", "**WRONG SHAPE**"]
    verdict = "reference" if name == reference else ("yes" if agreement.passed else "**NO**")
    return [_sci(agreement.max_abs_error), _sci(agreement.max_rel_error), verdict]


def render_table(result: BenchmarkResult) -> list[str]:
    """One markdown table: a row per (case, contestant), a ratio column per contestant."""
    names = [c.name for c in result.cases[0].contestants] if result.cases else []
    multi_case = len(result.cases) > 1
    header = ["case"] if multi_case else []
    header += ["contestant", "median ms", "min-max ms"]
    header += [f"/ {peer}" for peer in names]
    header += ["max abs err", "max rel err", "agrees"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in result.cases:
        medians = {c.name: c.timing.median_s for c in case.contestants if c.timing is not None}
        for contestant in case.contestants:
            row = [case.label] if multi_case else []
            row.append(f"`{contestant.name}`")
            if contestant.timing is None:
                row += [contestant.status, "-"] + ["-"] * len(names)
            else:
                t = contestant.timing
                row += [_ms(t.median_s), f"{_ms(t.min_s)}-{_ms(t.max_s)}"]
                for peer in names:
                    ratio = t.median_s / medians[peer] if peer in medians else None
                    row.append("-" if ratio is None else f"{ratio:.2f}")
            row += _agreement_cells(contestant.agreement, result.reference, contestant.name)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def render_markdown(results: Sequence[BenchmarkResult], env: dict[str, Any], command: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v is not None)
    machine = f"{env['cpu']}, {env['cpu_cores']} cores ({env['torch_threads']} torch threads)"
    if "gpu" in env:
        machine += f"; GPU {env['gpu']}"
    lines = [
        "# Benchmark results",
        "",
        "Generated by the command below; do not edit by hand (see `benchmarks/README.md`).",
        "",
        f"- command: `{command}`",
        f"- date: {env['date']}; git commit: {env['git_commit'] or 'none (uncommitted tree)'}",
        f"- machine: {machine}; device `{env['device']}`",
        f"- python {env['python']} on {env['platform']}",
        f"- versions: {versions}",
        "",
        "Times are wall-clock per full job (all targets, whole batch), median of the repeats"
        " after warm-up; contestants are interleaved round by round. A `/ peer` column is"
        " this row's median divided by that peer's median: below 1 means faster than the"
        " peer. Errors compare the attributions, shaped [targets, batch, *obs], with the"
        " reference contestant's; `max rel err` is max |a - ref| / max |ref|.",
        "",
    ]
    for result in results:
        tol = result.tolerance
        lines += [f"## {result.title} (`{result.name}`)", "", result.description, ""]
        lines += [f"- settings: {_settings(result.settings)}"]
        lines += [
            f"- agreement: reference `{result.reference}`; passes when, elementwise,"
            f" |a - ref| <= {tol.atol_scaled:g} * max|ref| + {tol.rtol:g} * |ref| (float32)"
        ]
        lines += ["", *render_table(result), ""]
        flagged = _flagged(result)
        if flagged:
            lines += ["**Disagreements / failures:**", ""]
            lines += [f"- {line}" for line in flagged]
            lines.append("")
        notes = result.notes + _contestant_notes(result)
        if notes:
            lines += ["Notes:", ""]
            lines += [f"- {note}" for note in notes]
            lines.append("")
    return "\n".join(lines)


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _flagged(result: BenchmarkResult) -> list[str]:
    flagged = []
    for case in result.cases:
        for c in case.contestants:
            where = f"`{c.name}`" + (f" in case {case.label}" if len(result.cases) > 1 else "")
            if c.status == "error":
                flagged.append(f"{where} failed: {c.note}")
            elif c.agreement is not None and not c.agreement.passed:
                a = c.agreement
                flagged.append(
                    f"{where} disagrees with `{result.reference}`: max abs err"
                    f" {_sci(a.max_abs_error)}, scale {_sci(a.scale)}"
                )
    return flagged


def _contestant_notes(result: BenchmarkResult) -> list[str]:
    notes: dict[str, str] = {}
    for case in result.cases:
        for c in case.contestants:
            if c.status == "skipped" and c.note:
                notes.setdefault(c.name, f"`{c.name}` skipped: {c.note}")
    return list(notes.values())


def to_json(results: Sequence[BenchmarkResult], env: dict[str, Any], command: str) -> str:
    def encode(obj: Any) -> Any:
        if isinstance(obj, Timing):
            return {
                "samples_s": obj.samples_s,
                "median_s": obj.median_s,
                "min_s": obj.min_s,
                "max_s": obj.max_s,
            }
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, dict):
            return {str(k): encode(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [encode(v) for v in obj]
        if isinstance(obj, float) and obj != obj:  # NaN is not JSON
            return None
        return obj

    payload = {
        "command": command,
        "environment": env,
        "benchmarks": [encode(r) for r in results],
    }
    return json.dumps(payload, indent=2) + "\n"


def write_reports(
    results: Sequence[BenchmarkResult],
    env: dict[str, Any],
    command: str,
    directory: Path,
) -> tuple[Path, Path]:
    """Write ``RESULTS.md`` and ``results.json`` into ``directory``."""
    markdown = directory / "RESULTS.md"
    raw = directory / "results.json"
    markdown.write_text(render_markdown(results, env, command), encoding="utf-8")
    raw.write_text(to_json(results, env, command), encoding="utf-8")
    return markdown, raw
