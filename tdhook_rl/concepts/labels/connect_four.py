"""Connect Four concepts of a position, seen from the player to move, batched in torch.

Boards follow :mod:`tdhook_rl.envs.connect_four`: ``[..., 6, 7]`` with row 0 at the top,
``+1`` the first player's stones, ``-1`` the second's, ``0`` empty; a stone dropped in a
column lands on its highest-numbered empty row. ``stone`` is the stone value (``+1`` or
``-1``) of the player to move ("own"). numpy arrays are accepted.

* ``own_open_threes`` / ``their_open_threes``: lines of four cells (horizontal, vertical,
  diagonal; 69 on the board) holding three of the player's stones and one empty cell;
* ``win_available``: the player to move completes four in a row with one drop;
* ``loss_threatened``: the opponent would complete four with one drop if it were its move
  (a threat the player to move must block);
* ``centre_control``: own minus their stones in the centre column.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CONNECT_FOUR_CONCEPTS", "connect_four_concepts", "immediate_wins", "open_threes"]

ROWS, COLUMNS = 6, 7
CONNECT_FOUR_CONCEPTS = (
    "own_open_threes",
    "their_open_threes",
    "win_available",
    "loss_threatened",
    "centre_control",
)


def _as_board(board: Any) -> torch.Tensor:
    board = torch.as_tensor(board)
    if board.ndim < 2 or tuple(board.shape[-2:]) != (ROWS, COLUMNS):
        raise ValueError(f"a Connect Four board is [..., 6, 7], got {tuple(board.shape)}")
    if not bool(((board == 0) | (board == 1) | (board == -1)).all()):
        raise ValueError("a Connect Four board holds only +1, -1 and 0")
    return board.to(torch.int8)


def _windows(cells: torch.Tensor) -> torch.Tensor:
    """``[..., 6, 7]`` -> ``[..., 69, 4]``: the cells of every line of four."""
    h = cells.unfold(-1, 4, 1)  # (..., 6, 4, 4)
    v = cells.unfold(-2, 4, 1)  # (..., 3, 7, 4)
    idx = torch.arange(4)
    r, c = torch.arange(3)[:, None, None], torch.arange(4)[None, :, None]
    d = cells[..., r + idx, c + idx]  # (..., 3, 4, 4) down-right
    a = cells[..., r + idx, c + 3 - idx]  # (..., 3, 4, 4) down-left
    return torch.cat([w.flatten(-3, -2) for w in (h, v, d, a)], -2)


def open_threes(board: Any, stone: Any) -> torch.Tensor:
    """Lines of four with three ``stone`` stones and one empty cell, ``[...]`` (long).

    Examples:
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[5, 0:3] = 1  # three in the bottom row: a0..a2, a3 empty
        >>> int(open_threes(board, 1))
        1
    """
    board = _as_board(board)
    stone = torch.as_tensor(stone, dtype=torch.int8).reshape(board.shape[:-2])
    w = _windows(board)  # (..., 69, 4)
    mine = (w == stone[..., None, None]).sum(-1)
    empty = (w == 0).sum(-1)
    return ((mine == 3) & (empty == 1)).sum(-1)


def immediate_wins(board: Any, stone: Any) -> torch.Tensor:
    """Bool ``[..., 7]``: the columns where dropping ``stone`` completes four in a row.

    Examples:
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[3:6, 2] = -1  # three stacked in column 2
        >>> immediate_wins(board, -1).nonzero().flatten().tolist()
        [2]
    """
    board = _as_board(board)
    stone = torch.as_tensor(stone, dtype=torch.int8).reshape(board.shape[:-2])
    empty = board == 0
    below = torch.ones_like(empty)
    below[..., :-1, :] = ~empty[..., 1:, :]
    landing = empty & below  # (..., 6, 7), the lowest empty cell of each column
    wins = []
    for col in range(COLUMNS):
        after = board.clone()
        cell = landing[..., :, col]  # (..., 6)
        column = after[..., :, col]
        after[..., :, col] = torch.where(cell, stone[..., None], column)
        lines = _windows(after)
        four = (lines == stone[..., None, None]).all(-1).any(-1)
        wins.append(four & cell.any(-1))
    return torch.stack(wins, -1)


def connect_four_concepts(board: Any, stone: Any) -> dict[str, torch.Tensor]:
    """Every concept of :data:`CONNECT_FOUR_CONCEPTS` per board.

    Args:
        board: ``[..., 6, 7]`` boards (``+1``, ``-1``, ``0``).
        stone: ``[...]`` the stone of the player to move (``+1`` or ``-1``), or one value.

    Returns:
        ``{name: [...]}``: float32 counts (open threes, centre control) and bools.

    Examples:
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[5, 0:3] = 1
        >>> c = connect_four_concepts(board, -1)  # the second player to move
        >>> bool(c["loss_threatened"]), bool(c["win_available"]), float(c["centre_control"])
        (True, False, 0.0)
    """
    board = _as_board(board)
    stone = torch.as_tensor(stone, dtype=torch.int8).expand(board.shape[:-2])
    if not bool(((stone == 1) | (stone == -1)).all()):
        raise ValueError("stone is the stone of the player to move: +1 or -1")
    centre = board[..., :, COLUMNS // 2]
    return {
        "own_open_threes": open_threes(board, stone).float(),
        "their_open_threes": open_threes(board, -stone).float(),
        "win_available": immediate_wins(board, stone).any(-1),
        "loss_threatened": immediate_wins(board, -stone).any(-1),
        "centre_control": (
            (centre == stone[..., None]).sum(-1) - (centre == -stone[..., None]).sum(-1)
        ).float(),
    }
