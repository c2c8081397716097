"""Figures of :mod:`tdhook_rl.concepts.across`: McGrath-style "what, when, where" maps (layer
x training step, one panel per concept), the layer x concept map of one checkpoint with its
controls, and the per-square intrinsic-dimension map of a board agent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tdhook_rl.concepts.across import ConceptTable

__all__ = ["plot_concept_map", "plot_concepts_across", "plot_dimension_boxes", "plot_square_map"]


def _pyplot() -> Any:
    from tdhook_rl.viz._mpl import pyplot  # matplotlib only when a figure is drawn

    return pyplot()


def _save(fig: Any, path: str | Path | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def _limits(table: ConceptTable, value: str) -> tuple[float, float]:
    if value == "selectivity":
        return -1.0, 1.0
    metrics = {r.get("metric") for r in table.rows}
    return (0.5, 1.0) if metrics == {"balanced_accuracy"} else (0.0, 1.0)


def plot_concepts_across(
    table: ConceptTable,
    *,
    value: str = "selectivity",
    concepts: Sequence[str] | None = None,
    columns: int = 4,
    path: str | Path | None = None,
) -> Any:
    """One heat map per concept: sites (rows, input side at the top) x training steps
    (columns), coloured by ``value`` (``"score"``, ``"control"`` or ``"selectivity"`` =
    score minus the random network's), each cell printed; blank cells have no score (see
    the table's ``note``).

    Returns:
        the matplotlib figure (also written to ``path`` when given).
    """
    plt = _pyplot()
    names = list(concepts or table.concepts)
    cols = max(1, min(columns, len(names)))
    rows = -(-len(names) // cols)
    sites, steps = table.sites, table.steps
    w = 1.4 + 0.6 * len(steps)
    h = 1.2 + 0.35 * len(sites)
    size = (max(w * cols + 1.5, 6.0), h * rows + 0.8)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    lo, hi = _limits(table, value)
    cmap = "RdBu_r" if value == "selectivity" else "viridis"
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.axis("off")
            continue
        grid = table.grid(names[i], value).numpy()
        image = ax.imshow(grid, vmin=lo, vmax=hi, cmap=cmap, aspect="auto")
        for (r, c), v in _cells(grid):
            ax.text(
                c,
                r,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="black" if abs(v) < 0.6 or (value != "selectivity" and v > 0.6) else "white",
            )
        ax.set_title(names[i], fontsize=9)
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=7)
        ax.set_yticks(range(len(sites)), sites if i % cols == 0 else [""] * len(sites), fontsize=7)
        ax.set_xlabel("training step", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=value)
    fig.suptitle(f"what, when, where: {_label(table, value)}", fontsize=9)
    return _save(fig, path)


def _cells(grid: Any) -> list[tuple[tuple[int, int], float]]:
    return [((r, c), float(v)) for (r, c), v in _enumerate(grid) if not math.isnan(v)]


def _enumerate(grid: Any):
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            yield (r, c), grid[r, c]


def _label(table: ConceptTable, value: str) -> str:
    metrics = sorted({str(r.get("metric")) for r in table.rows})
    what = " / ".join(
        m.replace("balanced_accuracy", "balanced accuracy").replace("r2", "R^2") for m in metrics
    )
    return {"score": what, "control": f"{what} of the random network"}.get(
        value, f"selectivity ({what} minus random network)"
    )


def plot_concept_map(
    table: ConceptTable, *, step: Any = None, path: str | Path | None = None
) -> Any:
    """The sites x concepts map of one checkpoint (the last by default): colour = the
    probe's selectivity over the random network, text = ``score (control)``; concepts that
    could not be scored are marked with their reason's first words."""
    plt = _pyplot()
    step = table.steps[-1] if step is None else step
    concepts, sites = table.concepts, table.sites
    grid = torch.full((len(sites), len(concepts)), math.nan)
    text: dict[tuple[int, int], str] = {}
    for r in table.rows:
        if r["step"] != step:
            continue
        i, j = sites.index(r["site"]), concepts.index(r["concept"])
        if r["score"] is None:
            text[i, j] = (r.get("note") or "no score").split(" (")[0].split(":")[0][:14]
            continue
        if r.get("selectivity") is not None:
            grid[i, j] = r["selectivity"]
        ctrl = "-" if r.get("control") is None else f"{r['control']:.2f}"
        text[i, j] = f"{r['score']:.2f}\n({ctrl})"
    fig, ax = plt.subplots(figsize=(1.6 + 0.95 * len(concepts), 1.3 + 0.55 * len(sites)))
    image = ax.imshow(grid.numpy(), vmin=-1, vmax=1, cmap="RdBu_r", aspect="auto")
    for (i, j), s in text.items():
        ax.text(j, i, s, ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(concepts)), concepts, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(sites)), sites, fontsize=8)
    fig.colorbar(image, ax=ax, label="selectivity (score - random network)")
    ax.set_title(
        f"concepts per layer, checkpoint {step}: score (random network)\n{_label(table, 'score')}",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_dimension_boxes(
    samples: dict[str, torch.Tensor],
    *,
    control: dict[str, torch.Tensor] | None = None,
    path: str | Path | None = None,
    title: str = "",
) -> Any:
    """Boxplots of TwoNN intrinsic dimensions per layer (bootstrap or subset estimates),
    the random network's beside them when given."""
    plt = _pyplot()
    names = list(samples)
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(names), 3.2))
    pos = torch.arange(len(names)).float()
    shift = 0.2 if control else 0.0
    ax.boxplot(
        [samples[n].tolist() for n in names],
        positions=(pos - shift).tolist(),
        widths=0.35,
        patch_artist=True,
        boxprops={"facecolor": "tab:green"},
    )
    if control:
        ax.boxplot(
            [control[n].tolist() for n in names],
            positions=(pos + shift).tolist(),
            widths=0.35,
            patch_artist=True,
            boxprops={"facecolor": "lightgray"},
        )
        ax.plot([], [], "s", color="tab:green", label="trained")
        ax.plot([], [], "s", color="lightgray", label="random network")
        ax.legend(fontsize=8)
    ax.set_xticks(pos.tolist(), names, rotation=30, ha="right")
    ax.set_ylabel("intrinsic dimension (TwoNN)")
    ax.set_title(title or "intrinsic dimension per layer")
    fig.tight_layout()
    return _save(fig, path)


def plot_square_map(dims: torch.Tensor, *, path: str | Path | None = None, title: str = "") -> Any:
    """An 8 x 8 map of one number per square (e.g. the TwoNN dimension of a layer's features
    at each square), ``dims[rank, file]`` with rank 1 at the bottom, files a..h."""
    plt = _pyplot()
    if tuple(dims.shape) != (8, 8):
        raise ValueError(f"a square map is [8, 8] (rank, file), got {tuple(dims.shape)}")
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    image = ax.imshow(dims.flip(0).numpy(), cmap="magma")
    for r in range(8):
        for f in range(8):
            ax.text(
                f,
                7 - r,
                f"{float(dims[r, f]):.1f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if dims[r, f] < dims.mean() else "black",
            )
    ax.set_xticks(range(8), list("abcdefgh"))
    ax.set_yticks(range(8), [str(8 - r) for r in range(8)])
    fig.colorbar(image, ax=ax, label="intrinsic dimension (TwoNN)")
    ax.set_title(title or "intrinsic dimension per square", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
