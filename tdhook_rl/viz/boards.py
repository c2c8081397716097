"""Shared pieces of the board heatmaps (:mod:`tdhook_rl.viz.chess_board`,
:mod:`tdhook_rl.viz.connect_four_board`): the colormap, the move colour, value checks and the
grid of boards (one row per position, one column per head) with its shared colour scale."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from tdhook_rl.viz._mpl import pyplot

CMAP = "RdBu_r"
ARROW = "#14a03c"  # green: stands out on both ends of the red-blue colormap


def _as_grid(values: Any, shape: tuple[int, int]) -> Any:
    grid = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    if tuple(grid.shape) != shape:
        raise ValueError(f"expected values of shape {shape}, got {tuple(grid.shape)}")
    return grid.numpy()


def _stroke(color: str, width: float) -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width, foreground=color)]


def _heatmap_grid(
    n_rows: int,
    maps: Mapping[str, Any],
    draw: Callable[..., Any],
    *,
    titles: Sequence[Sequence[str]] | None,
    row_labels: Sequence[str] | None,
    scale: Literal["row", "figure"],
    colorbar_label: str,
    cell_size: tuple[float, float],
    suptitle: str | None,
) -> Any:
    heads = list(maps)
    data = {h: torch.as_tensor(m, dtype=torch.float32).detach().cpu() for h, m in maps.items()}
    for head, m in data.items():
        if m.shape[0] != n_rows:
            raise ValueError(f"maps[{head!r}] has {m.shape[0]} rows; expected {n_rows}")
    for name, seq in (("titles", titles), ("row_labels", row_labels)):
        if seq is not None and len(seq) != n_rows:
            raise ValueError(f"{len(seq)} {name} for {n_rows} rows")
    if scale not in ("row", "figure"):
        raise ValueError(f"scale must be 'row' or 'figure', got {scale!r}")
    stacked = torch.stack([data[h] for h in heads], 1).abs()  # (rows, heads, *board)
    per_row = stacked.flatten(1).max(1).values.clamp_min(1e-12)
    limits = per_row if scale == "row" else per_row.max().expand(n_rows)
    plt = pyplot()
    width, height = cell_size
    fig, axes = plt.subplots(
        n_rows,
        len(heads),
        figsize=(width * len(heads) + 1.3, height * n_rows + (0.6 if suptitle else 0.2)),
        squeeze=False,
        layout="constrained",
    )
    for i in range(n_rows):
        image = None
        for j, head in enumerate(heads):
            title = titles[i][j] if titles is not None else head
            image = draw(axes[i, j], i, data[head][i], float(limits[i]), title)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=12, fontweight="bold")
        if scale == "row":
            fig.colorbar(image, ax=axes[i, :].tolist(), label=colorbar_label, shrink=0.85)
    if scale == "figure":
        fig.colorbar(image, ax=axes.ravel().tolist(), label=colorbar_label, shrink=0.6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=14)
    return fig
