"""Board heatmaps: attribution per square of a chess board or per cell of a Connect Four grid,
with the pieces (or discs) drawn on top and the chosen move marked.

:func:`chess_square_map` reduces an attribution over the chess planes (``[..., 18, 8, 8]``,
seen from the side to move, see :mod:`tdhook_rl.envs.chess`) to one signed number per
square, in the usual orientation (``[..., rank, file]``, a1 = ``[0, 0]``).
:func:`chess_heatmaps` and :func:`connect_four_heatmaps` draw a grid of boards, one row per
position and one column per head, on a diverging colormap centred at zero that every head
of a row (or of the whole figure) shares. :func:`board_heatmap` and
:func:`connect_four_heatmap` draw one board on a given matplotlib axes.

Pieces are drawn as Unicode chess glyphs with matplotlib's bundled DejaVu Sans (no other
font, no network): white pieces white with a black outline, black pieces black with a white
outline, so both stay visible on red and on blue squares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from tdhook_rl.viz.boards import ARROW, CMAP, _as_grid, _heatmap_grid, _stroke

__all__ = ["board_heatmap", "chess_heatmaps", "chess_square_map"]

FILES = "abcdefgh"
# the filled glyphs, drawn in white or black (the outlined ones vanish on dark squares)
GLYPHS = dict(zip("kqrbnp", "\u265a\u265b\u265c\u265d\u265e\u265f", strict=True))


def chess_square_map(attribution: torch.Tensor, white_to_move: bool | torch.Tensor) -> torch.Tensor:
    """Sums an attribution over the chess planes and puts each square at ``[rank, file]``.

    The observation of :mod:`tdhook_rl.envs.chess` is drawn from the side to move: cell
    ``(row, col)`` is file ``col`` and rank ``8 - row`` for white, rank ``row + 1`` for
    black. The sum over planes is signed (a plane that raised the target and one that lowered
    it on the same square cancel); planes that are constant over the board (side to move,
    castling rights) add their share to every square.

    Args:
        attribution: ``[..., planes, 8, 8]``, in the observation's layout.
        white_to_move: the side to move, a bool or a bool tensor of the batch shape ``[...]``.

    Returns:
        ``[..., 8, 8]``: ``out[..., rank, file]`` (``rank`` 0 is rank 1, ``file`` 0 is the
        a-file; python-chess square ``s`` is ``out[..., s // 8, s % 8]``).

    Examples:
        >>> planes = torch.zeros(18, 8, 8)
        >>> planes[0, 6, 4] = 1.0   # white to move: row 6 is rank 2, col 4 the e-file
        >>> chess_square_map(planes, True)[1, 4]   # e2
        tensor(1.)
    """
    if attribution.ndim < 3 or attribution.shape[-2:] != (8, 8):
        raise ValueError(
            f"expected an attribution [..., planes, 8, 8], got shape {tuple(attribution.shape)}"
        )
    per_cell = attribution.sum(-3)  # (..., 8, 8): row, col
    white = torch.as_tensor(white_to_move, dtype=torch.bool, device=per_cell.device)
    if white.shape != per_cell.shape[:-2] and white.ndim:
        raise ValueError(
            f"white_to_move has shape {tuple(white.shape)}; expected a bool or the batch "
            f"shape {tuple(per_cell.shape[:-2])}"
        )
    # white: row = 7 - rank (flip the rows); black: row = rank
    return torch.where(white[..., None, None], per_cell.flip(-2), per_cell)


def _pieces(fen: str) -> dict[tuple[int, int], str]:
    """``{(file, rank): piece letter}`` from the board field of a FEN (``"K"`` white king)."""
    rows = fen.split()[0].split("/") if fen.strip() else []
    if len(rows) != 8:
        raise ValueError(f"not a FEN (the board field needs 8 ranks): {fen!r}")
    pieces = {}
    for i, row in enumerate(rows):
        file = 0
        for char in row:
            if char.isdigit():
                file += int(char)
            elif char.lower() in GLYPHS:
                pieces[(file, 7 - i)] = char
                file += 1
            else:
                raise ValueError(f"not a FEN (unknown piece {char!r}): {fen!r}")
        if file != 8:
            raise ValueError(f"not a FEN (rank {8 - i} has {file} squares): {fen!r}")
    return pieces


def _square(name: str) -> tuple[int, int]:
    return FILES.index(name[0]), int(name[1]) - 1


def board_heatmap(
    ax: Any,
    fen: str,
    values: Any,
    *,
    move: str | None = None,
    vmax: float | None = None,
    cmap: str = CMAP,
    title: str | None = None,
) -> Any:
    """Draws one chess board on ``ax``: the values as colours, the pieces, the move's arrow.

    White is at the bottom (a1 bottom left), files a-h below, ranks 1-8 on the left.

    Args:
        ax: a matplotlib axes.
        fen: the position.
        values: ``[8, 8]`` at ``[rank, file]`` (see :func:`chess_square_map`).
        move: a move in UCI (``"e2e4"``), drawn as an arrow.
        vmax: the colour scale is ``[-vmax, vmax]`` (default: the largest ``|value|``).
        cmap: a diverging colormap.
        title: the axes title.

    Returns:
        the ``AxesImage`` (for a colour bar).

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots()
        >>> start = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
        >>> image = board_heatmap(ax, start, torch.randn(8, 8), move="e2e4")
        >>> len([t for t in ax.texts if t.get_text()])   # the pieces (the arrow has no text)
        32
    """
    grid = _as_grid(values, (8, 8))
    scale = float(vmax) if vmax else float(abs(grid).max()) or 1.0
    image = ax.imshow(
        grid, origin="lower", extent=(-0.5, 7.5, -0.5, 7.5), cmap=cmap, vmin=-scale, vmax=scale
    )
    for k in range(9):  # square borders
        ax.axhline(k - 0.5, color="#00000022", lw=0.6)
        ax.axvline(k - 0.5, color="#00000022", lw=0.6)
    for (file, rank), piece in _pieces(fen).items():
        white = piece.isupper()
        ax.text(
            file,
            rank,
            GLYPHS[piece.lower()],
            ha="center",
            va="center_baseline",
            fontsize=21,
            family="DejaVu Sans",
            color="white" if white else "black",
            path_effects=_stroke("black" if white else "white", 2.2),
        )
    if move:
        start, end = _square(move[:2]), _square(move[2:4])
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops={
                "arrowstyle": "-|>,head_width=0.45,head_length=0.7",
                "color": ARROW,
                "lw": 3.5,
                "alpha": 0.9,
                "shrinkA": 6,
                "shrinkB": 4,
                "path_effects": _stroke("white", 6),
            },
        )
    ax.set_xticks(range(8), list(FILES))
    ax.set_yticks(range(8), [str(r) for r in range(1, 9)])
    ax.tick_params(length=0)
    ax.set_xlim(-0.5, 7.5)
    ax.set_ylim(-0.5, 7.5)
    if title:
        ax.set_title(title)
    return image


def chess_heatmaps(
    fens: Sequence[str],
    maps: Mapping[str, Any],
    moves: Sequence[str | None] | None = None,
    *,
    titles: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: Literal["board", "row", "figure"] = "board",
    colorbar_label: str = "attribution (sum over planes)",
    suptitle: str | None = None,
) -> Any:
    """Chess boards coloured by attribution: one row per position, one column per head.

    Every board has its own colour scale centred at zero, from the largest ``|value|`` it
    shows, printed under its title (``scale="row"``: the boards of a row share one,
    ``"figure"``: all boards do), so a weak head is not washed out beside a strong one; red
    squares raised the head's output, blue ones lowered it.

    Args:
        fens: the positions.
        maps: ``{head: [n_positions, 8, 8]}`` at ``[rank, file]`` (see
            :func:`chess_square_map`); the columns, in order.
        moves: the move played in each position (UCI), drawn as an arrow on every board.
        titles: ``titles[i][j]``, the title of the board of position ``i`` and head ``j``
            (default: the head's name).
        row_labels: a label left of each row.
        scale: ``"board"`` (a colour bar per board), ``"row"`` (per row) or ``"figure"``
            (one colour bar).
        colorbar_label: what the colours measure.
        suptitle: the figure title.

    Returns:
        The matplotlib figure.

    Examples:
        >>> import torch
        >>> fen = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
        >>> fig = chess_heatmaps([fen], {"move": torch.randn(1, 8, 8),
        ...                              "value": torch.randn(1, 8, 8)}, ["e7e5"])
        >>> [ax.get_title().splitlines()[0] for ax in fig.axes[:2]]  # then each one's scale
        ['move', 'value']
    """
    moves = list(moves) if moves is not None else [None] * len(fens)
    if len(moves) != len(fens):
        raise ValueError(f"{len(moves)} moves for {len(fens)} positions")

    def draw(ax: Any, i: int, values: torch.Tensor, vmax: float, title: str) -> Any:
        return board_heatmap(ax, fens[i], values, move=moves[i], vmax=vmax, title=title)

    return _heatmap_grid(
        len(fens),
        maps,
        draw,
        titles=titles,
        row_labels=row_labels,
        scale=scale,
        colorbar_label=colorbar_label,
        cell_size=(4.2, 4.0),
        suptitle=suptitle,
    )
