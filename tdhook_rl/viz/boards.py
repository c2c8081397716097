"""Shared pieces of the board heatmaps (:mod:`tdhook_rl.viz.chess_board`,
:mod:`tdhook_rl.viz.connect_four_board`): the colormap, the move colour, value checks and the
grid of boards (one row per position, one column per head) with its colour scales."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from tdhook_rl.viz._mpl import pyplot

CMAP = "RdBu_r"
#: colour scales of a grid of boards: each board its own, one per row, one per figure
SCALES = ("board", "row", "figure")
#: a board whose largest |value| is below this fraction of its head's largest is near zero
NEAR_ZERO = 1e-3
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
    scale: Literal["board", "row", "figure"],
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
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    stacked = torch.stack([data[h] for h in heads], 1).abs()  # (rows, heads, *board)
    per_board = stacked.flatten(2).max(2).values.clamp_min(1e-12)  # (rows, heads)
    if scale == "row":
        limits = per_board.max(1, keepdim=True).values.expand_as(per_board)
    elif scale == "figure":
        limits = per_board.max().expand_as(per_board)
    else:  # each board its own symmetric scale: a weak head never vanishes beside a strong one
        limits = per_board.clone()
    # a board whose values are a vanishing fraction of its head's largest would show rounding
    # noise at full colour on its own scale: it is drawn on the head's scale, and says so
    head_max = per_board.max(0).values
    near_zero = per_board < NEAR_ZERO * head_max
    limits = torch.where(near_zero, head_max.expand_as(limits), limits)
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
            limit = float(limits[i, j])
            if near_zero[i, j]:
                title = f"{title}\nnear zero (< {NEAR_ZERO:.1%} of this head's largest)"
            elif scale == "board":  # the scale is printed: boards are compared by their numbers
                title = f"{title}\nscale ±{limit:.2g}"
            image = draw(axes[i, j], i, data[head][i], limit, title)
            if scale == "board":
                label = colorbar_label if j == len(heads) - 1 else None
                fig.colorbar(image, ax=axes[i, j], shrink=0.8, label=label)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=12, fontweight="bold")
        if scale == "row":
            fig.colorbar(image, ax=axes[i, :].tolist(), label=colorbar_label, shrink=0.85)
    if scale == "figure":
        fig.colorbar(image, ax=axes.ravel().tolist(), label=colorbar_label, shrink=0.6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=14)
    return fig
