"""Small pieces the ``tdhook-rl explain`` jobs share."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tdhook_rl.attribution import AttributionMethod, resolve_method

__all__ = ["attribution_method", "finish", "top_entries"]


def attribution_method(name: str, n_steps: int) -> AttributionMethod:
    """The method called ``name``, with ``n_steps`` path points if it integrates a path.

    Examples:
        >>> attribution_method("ig", 16)
        IntegratedGradients(n_steps=16, rule='gausslegendre', baseline=0.0, chunk_size=None)
        >>> attribution_method("saliency", 16)
        Saliency(abs=True)
    """
    method = resolve_method(name)
    if hasattr(method, "n_steps"):
        method = type(method)(n_steps=n_steps)
    return method


def top_entries(values: torch.Tensor, names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` entries of ``values`` largest in absolute value, with their signed values.

    Args:
        values: any shape; flattened in row-major order to match ``names``.
        names: one name per entry.
        k: how many.

    Examples:
        >>> top_entries(torch.tensor([0.1, -2.0, 0.5]), ["a", "b", "c"], 2)
        [('b', -2.0), ('c', 0.5)]
    """
    flat = values.detach().flatten().cpu()
    if flat.numel() != len(names):
        raise ValueError(f"{len(names)} names for {flat.numel()} values")
    order = flat.abs().argsort(descending=True, stable=True)[:k]
    return [(names[i], float(flat[i])) for i in order.tolist()]


def finish(report: Any, summary: dict[str, Any], start: float, what: str, bar: Any) -> Path:
    """Closes a job: wall time into ``summary``, a closing line, the numbers into
    ``summary.json``, then publishes the folder (``report``: a
    :class:`~tdhook_rl.report.writer.ReportWriter`; ``what``: the line's first words, e.g.
    ``"8 positions"``; ``bar``: the job's progress bar, advanced and closed)."""
    summary["wall_seconds"] = time.perf_counter() - start
    report.paragraph(f"{what}, {summary['wall_seconds']:.1f} s. Made with tdhook_rl.", css="meta")
    report.numbers.update(summary)
    path = report.publish()
    bar.update()
    bar.close()
    return path
