"""Small pieces the ``tdhook-rl explain`` jobs share."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase

from tdhook_rl.attributed import DELTA_KEY
from tdhook_rl.attribution import AttributionMethod, resolve_method

__all__ = ["attribution_method", "board_move_numbers", "finish", "max_abs_delta", "top_entries"]


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
        path_method: Any = type(method)  # a path method (IntegratedGradients) takes n_steps
        method = path_method(n_steps=n_steps)
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


def board_move_numbers(
    out: TensorDictBase, i: int, heads: Collection[str], has_delta: bool
) -> dict[str, Any]:
    """The numbers every board-game report keeps of move ``i`` of ``out`` (the output of an
    attributed board agent, see :mod:`tdhook_rl.agents`): the chosen move's probability, the
    win/draw/loss probabilities, the value and, for path methods, each head's completeness
    delta.

    Examples:
        >>> from tensordict import TensorDict
        >>> out = TensorDict(
        ...     action_log_prob=torch.tensor([0.0]),
        ...     win_logits=torch.tensor([[0.0, -1e9, -1e9]]),
        ...     state_value=torch.tensor([[1.0]]),
        ...     batch_size=[1],
        ... )
        >>> board_move_numbers(out, 0, ["move"], has_delta=False)
        {'move_prob': 1.0, 'p_win': 1.0, 'p_draw': 0.0, 'p_loss': 0.0, 'value': 1.0}
    """
    win, draw, loss = out["win_logits"][i].softmax(-1).tolist()
    entry: dict[str, Any] = {
        "move_prob": float(out["action_log_prob"][i].exp()),
        "p_win": win,
        "p_draw": draw,
        "p_loss": loss,
        "value": float(out["state_value"][i]),
    }
    if has_delta:
        entry["completeness_delta"] = {h: float(out["attribution", h, DELTA_KEY][i]) for h in heads}
    return entry


def max_abs_delta(rows: Sequence[dict[str, Any]], heads: Collection[str]) -> dict[str, float]:
    """The largest ``|completeness_delta|`` of each head over ``rows`` (see
    :func:`board_move_numbers`).

    Examples:
        >>> rows = [{"completeness_delta": {"v": -0.5}}, {"completeness_delta": {"v": 0.1}}]
        >>> max_abs_delta(rows, ["v"])
        {'v': 0.5}
    """
    return {h: max(abs(r["completeness_delta"][h]) for r in rows) for h in heads}


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
