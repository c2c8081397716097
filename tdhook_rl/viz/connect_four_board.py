"""Connect Four heatmaps: attribution per cell of the grid, with the discs drawn on top and
the chosen column marked (see :mod:`tdhook_rl.viz.chess_board` for the chess boards)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from tdhook_rl.viz.boards import ARROW, CMAP, _as_grid, _heatmap_grid

__all__ = ["connect_four_heatmap", "connect_four_heatmaps"]


def connect_four_heatmap(
    ax: Any,
    board: Any,
    values: Any,
    *,
    column: int | None = None,
    vmax: float | None = None,
    cmap: str = CMAP,
    title: str | None = None,
) -> Any:
    """Draws one Connect Four grid on ``ax``: the values as colours, the discs, the move.

    Row 0 is the top row (as in :mod:`tdhook_rl.envs.connect_four`). The first player's
    discs are black, the second player's white; the chosen column gets an arrow above the
    grid and a dashed ring where the disc lands.

    Args:
        ax: a matplotlib axes.
        board: ``[6, 7]`` with ``+1`` (first player), ``-1`` (second player), ``0`` (empty).
        values: ``[6, 7]``, one value per cell.
        column: the column played (0-6), or ``None``.
        vmax: the colour scale is ``[-vmax, vmax]`` (default: the largest ``|value|``).
        cmap: a diverging colormap.
        title: the axes title.

    Returns:
        the ``AxesImage`` (for a colour bar).

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots()
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[5, 3] = 1
        >>> image = connect_four_heatmap(ax, board, torch.randn(6, 7), column=3)
        >>> len(ax.patches)   # one disc and the ring where the next one lands
        2
    """
    from matplotlib.patches import Circle

    grid = _as_grid(values, (6, 7))
    stones = torch.as_tensor(board).detach().cpu()
    if tuple(stones.shape) != (6, 7):
        raise ValueError(f"expected a board of shape (6, 7), got {tuple(stones.shape)}")
    scale = float(vmax) if vmax else float(abs(grid).max()) or 1.0
    image = ax.imshow(grid, extent=(-0.5, 6.5, 5.5, -0.5), cmap=cmap, vmin=-scale, vmax=scale)
    for row in range(6):
        for col in range(7):
            stone = int(stones[row, col])
            if stone:
                ax.add_patch(
                    Circle(
                        (col, row),
                        0.3,
                        facecolor="#202020" if stone > 0 else "white",
                        edgecolor="#202020",
                        lw=1.5,
                    )
                )
    if column is not None:
        empty = [r for r in range(6) if int(stones[r, column]) == 0]
        ax.annotate(
            "",
            xy=(column, -0.55),
            xytext=(column, -1.35),
            arrowprops={"arrowstyle": "-|>,head_width=0.4", "color": ARROW, "lw": 3},
            annotation_clip=False,
        )
        if empty:
            ax.add_patch(
                Circle((column, empty[-1]), 0.32, fill=False, edgecolor=ARROW, lw=2.5, ls="--")
            )
    for k in range(8):
        ax.axvline(k - 0.5, color="#00000033", lw=0.6)
    for k in range(7):
        ax.axhline(k - 0.5, color="#00000033", lw=0.6)
    ax.set_xticks(range(7), [str(c) for c in range(7)])
    ax.set_yticks([])
    ax.tick_params(length=0)
    ax.set_xlim(-0.5, 6.5)
    ax.set_ylim(5.5, -1.4)
    ax.set_xlabel("column")
    if title:
        ax.set_title(title)
    return image


def connect_four_heatmaps(
    boards: Any,
    maps: Mapping[str, Any],
    columns: Sequence[int | None] | None = None,
    *,
    titles: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: Literal["board", "row", "figure"] = "board",
    colorbar_label: str = "attribution (sum over planes)",
    suptitle: str | None = None,
) -> Any:
    """Connect Four grids coloured by attribution: one row per position, one column per head.

    Same layout and colour scales as :func:`chess_heatmaps`.

    Args:
        boards: ``[n_positions, 6, 7]`` with ``+1``, ``-1``, ``0`` (the env's ``board``).
        maps: ``{head: [n_positions, 6, 7]}``, the columns, in order.
        columns: the column played in each position.
        titles, row_labels, scale, colorbar_label, suptitle: as in :func:`chess_heatmaps`.

    Returns:
        The matplotlib figure.

    Examples:
        >>> import torch
        >>> boards = torch.zeros(2, 6, 7, dtype=torch.int8)
        >>> boards[1, 5, 3] = 1
        >>> fig = connect_four_heatmaps(boards, {"move": torch.randn(2, 6, 7)}, [3, 2])
        >>> len(fig.axes)   # two grids and a colour bar per row
        4
    """
    boards = torch.as_tensor(boards)
    n_rows = boards.shape[0]
    columns = list(columns) if columns is not None else [None] * n_rows
    if len(columns) != n_rows:
        raise ValueError(f"{len(columns)} columns for {n_rows} positions")

    def draw(ax: Any, i: int, values: torch.Tensor, vmax: float, title: str) -> Any:
        return connect_four_heatmap(
            ax, boards[i], values, column=columns[i], vmax=vmax, title=title
        )

    return _heatmap_grid(
        n_rows,
        maps,
        draw,
        titles=titles,
        row_labels=row_labels,
        scale=scale,
        colorbar_label=colorbar_label,
        cell_size=(3.8, 3.6),
        suptitle=suptitle,
    )
