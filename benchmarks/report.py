"""Rendering benchmark results: ``RESULTS.md`` (markdown tables) and ``results.json``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Agreement,
    BenchmarkResult,
    CaseResult,
    ContestantResult,
    Timing,
    Tolerance,
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds >= 0.01 else f"{seconds * 1e3:.3f}"


def _sci(value: float) -> str:
    return f"{value:.1e}"


def _paired(timing: Timing | None, reference: Timing | None) -> str:
    """Median over rounds of this contestant's time over the reference's in the same round
    (the calls are interleaved, so a slow spell of the machine hits both sides of a pair)."""
    if timing is None or reference is None or len(timing.samples_s) != len(reference.samples_s):
        return "-"
    ratios = sorted(a / b for a, b in zip(timing.samples_s, reference.samples_s, strict=True))
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return f"{median:.2f}"


def _extra(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _agreement_cells(agreement: Agreement | None, reference: str, name: str) -> list[str]:
    if agreement is None:
        return ["-", "-", "-"]
    if not agreement.shape_ok:
        return ["-", "-", "**WRONG SHAPE**"]
    verdict = "reference" if name == reference else ("yes" if agreement.passed else "**NO**")
    return [_sci(agreement.max_abs_error), _sci(agreement.max_rel_error), verdict]


def render_table(result: BenchmarkResult) -> list[str]:
    """One markdown table: a row per (case, contestant), a ratio column per contestant."""
    names = list(dict.fromkeys(c.name for case in result.cases for c in case.contestants))
    extras = list(
        dict.fromkeys(k for case in result.cases for c in case.contestants for k in c.extras)
    )
    multi_case = len(result.cases) > 1
    header = ["case"] if multi_case else []
    header += ["contestant", "median ms", "min-max ms"]
    header += [f"/ {peer}" for peer in names]
    header += extras
    header += [f"paired / {result.reference}"]
    header += ["max abs err", "max rel err", "agrees"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in result.cases:
        medians = {c.name: c.timing.median_s for c in case.contestants if c.timing is not None}
        reference = next((c for c in case.contestants if c.name == result.reference), None)
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
            row += [_extra(contestant.extras.get(key)) for key in extras]
            row.append(_paired(contestant.timing, reference.timing if reference else None))
            row += _agreement_cells(contestant.agreement, result.reference, contestant.name)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def render_summary(result: BenchmarkResult) -> list[str]:
    """``focus``'s median divided by each peer's, one line per case (empty without focus)."""
    focus = result.focus
    peers = [
        name
        for name in dict.fromkeys(c.name for case in result.cases for c in case.contestants)
        if name != focus
    ]
    rows = []
    for case in result.cases:
        medians = {c.name: c.timing.median_s for c in case.contestants if c.timing is not None}
        if focus not in medians:
            continue
        ratios = [f"{medians[focus] / medians[p]:.2f}" if p in medians else "-" for p in peers]
        rows.append(f"| {case.label} | " + " | ".join(ratios) + " |")
    if not rows:
        return []
    header = "| case | " + " | ".join(f"/ {p}" for p in peers) + " |"
    return [
        f"Summary: `{focus}`'s median time divided by each peer's (below 1: `{focus}` faster).",
        "",
        header,
        "|" + "---|" * (len(peers) + 1),
        *rows,
        "",
        "All contestants:",
        "",
    ]


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
        f"- load average (1, 5, 15 min) at start: {env['load_average_at_start']}",
        f"- allocator: {_malloc(env['malloc_env'])}",
        f"- versions: {versions}",
        "",
        "Times are wall-clock per full job (all targets, whole batch). Each contestant is"
        " called once for the agreement check (its first warm-up), `extra warmup` more times,"
        " then `repeats` timed times, interleaved round by round with the other contestants;"
        " the table gives the median and the range of the timed calls. A `/ peer` column is"
        " this row's median divided by that peer's median: below 1 means faster than the"
        " peer; `paired / reference` is the median, over rounds, of this row's time divided by"
        " the reference's time in the same round (steadier when the machine's speed drifts)."
        " Errors compare the attributions, shaped [targets, batch, *obs], with the"
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
        lines += ["", *render_summary(result), *render_table(result), ""]
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


def _malloc(malloc_env: dict[str, str]) -> str:
    if not malloc_env:
        return "system default (`--system-malloc`)"
    settings = " ".join(f"{k}={v}" for k, v in sorted(malloc_env.items()))
    return f"glibc malloc with `{settings}` (see `benchmarks/README.md`)"


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


def from_json(text: str) -> tuple[list[BenchmarkResult], dict[str, Any], str]:
    """The inverse of :func:`to_json`: results, environment and command of a saved run."""
    payload = json.loads(text)

    def contestant(c: dict[str, Any]) -> ContestantResult:
        timing = Timing(c["timing"]["samples_s"]) if c.get("timing") else None
        agreement = None
        if c.get("agreement"):
            a = c["agreement"]
            nan = float("nan")
            agreement = Agreement(
                *(nan if a[k] is None else a[k] for k in ("max_abs_error", "max_rel_error")),
                nan if a["scale"] is None else a["scale"],
                a["passed"],
                a.get("shape_ok", True),
            )
        return ContestantResult(
            c["name"], c["status"], c.get("note", ""), timing, agreement, c.get("extras", {})
        )

    results = [
        BenchmarkResult(
            name=b["name"],
            title=b["title"],
            description=b["description"],
            settings=b["settings"],
            reference=b["reference"],
            tolerance=Tolerance(**b["tolerance"]),
            cases=[
                CaseResult(c["label"], c["params"], [contestant(x) for x in c["contestants"]])
                for c in b["cases"]
            ],
            notes=b.get("notes", []),
            focus=b.get("focus"),
        )
        for b in payload["benchmarks"]
    ]
    return results, payload["environment"], payload["command"]
