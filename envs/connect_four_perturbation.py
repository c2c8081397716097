"""Emptying Connect Four cells: the structured perturbation of the board (see
:class:`~tdhook_rl.attribution.board_perturbations.Structured`)."""

from __future__ import annotations

from typing import Literal

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution.board_perturbations import BoardPerturbation
from tdhook_rl.envs.connect_four import COLUMNS, ROWS

__all__ = ["ConnectFourCells"]

MODES = ("drop", "top", "cell")


class ConnectFourCells(BoardPerturbation):
    """Removes discs from Connect Four observations (``[3, 6, 7]``, see
    :mod:`tdhook_rl.envs.connect_four`), and recomputes the legal-move mask.

    A disc under another one cannot simply vanish: the disc above it would float, which no
    game reaches. ``mode`` says what removing a cell means:

    * ``"drop"`` (default): the disc is taken out and the discs above it fall one row, as in
      the game (several discs of one column removed: the rest fall together, in order);
    * ``"top"``: only the top disc of each column of the position can be removed; removing
      any other cell leaves the board unchanged (those cells' attribution is 0);
    * ``"cell"``: the cell is emptied and whatever is above it floats (what zeroing the
      stone planes does).

    Empty cells stay empty. The side to move (plane 2) is kept, as chess keeps its turn, so
    the disc counts may differ from a real game's. The legal-move mask of every perturbed
    board is recomputed with the game's rule (a column is legal while its top cell is
    empty) and written to ``mask_key`` (``None``: not written).

    Args:
        mode: ``"drop"``, ``"top"`` or ``"cell"``.
        key: the observation entry.
        mask_key: the legal-move mask entry the policy reads.

    Examples:
        >>> from tdhook_rl.envs.connect_four import observation_from_board
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[5, 0], board[4, 0] = 1, -1   # two discs in column 0; the first player moves
        >>> obs = observation_from_board(board, torch.tensor([0]))
        >>> absent = torch.zeros(1, 42, dtype=torch.bool)
        >>> absent[0, 5 * 7] = True   # the bottom disc of column 0: the one above falls
        >>> out = ConnectFourCells()(obs, absent)
        >>> out["observation"][0, :2, 4:, 0]   # rows 4-5 of column 0, own and opponent planes
        tensor([[0., 0.],
                [0., 1.]])
    """

    shape = (3, ROWS, COLUMNS)
    n_squares = ROWS * COLUMNS

    def __init__(
        self,
        mode: Literal["drop", "top", "cell"] = "drop",
        key: NestedKey = "observation",
        mask_key: NestedKey | None = "action_mask",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.mode = mode
        self.key = key
        self.mask_key = mask_key

    def square_labels(self) -> torch.Tensor:
        return torch.arange(self.n_squares).view(1, ROWS, COLUMNS)

    def __call__(self, board: torch.Tensor, absent: torch.Tensor) -> dict[NestedKey, torch.Tensor]:
        """:meth:`perturb` without a context (this board needs none)."""
        return self.perturb(board, None, absent)  # type: ignore[arg-type]

    def perturb(
        self, board: torch.Tensor, context: TensorDictBase | None, absent: torch.Tensor
    ) -> dict[NestedKey, torch.Tensor]:
        batch = board.shape[:-3]
        n_p = absent.shape[0]
        # (P, 42) -> (P, *[1] * batch_dims, 6, 7)
        gone = absent.to(board.device).view(n_p, *[1] * len(batch), ROWS, COLUMNS)
        stones = board[..., 0, :, :] - board[..., 1, :, :]  # (*batch, 6, 7): +1 own, -1 theirs
        occupied = stones != 0
        if self.mode == "cell":
            kept = stones * ~gone  # (P, *batch, 6, 7)
        elif self.mode == "top":
            above_empty = torch.ones_like(occupied)
            above_empty[..., 1:, :] = ~occupied[..., :-1, :]
            kept = stones.masked_fill(gone & occupied & above_empty, 0.0)
        else:  # "drop": the kept discs of a column fall to its bottom, keeping their order
            keep = occupied & ~gone  # (P, *batch, 6, 7)
            # a stable sort of each column on "kept" puts the emptied rows first (on top)
            order = keep.to(torch.uint8).sort(dim=-2, stable=True).indices
            kept = (stones * keep).gather(-2, order)
        first = board[..., 2, :, :].expand_as(kept)  # the side to move, unchanged
        planes = torch.stack([kept == 1, kept == -1], dim=-3).to(board.dtype)
        out: dict[NestedKey, torch.Tensor] = {
            self.key: torch.cat([planes, first.unsqueeze(-3)], dim=-3)
        }
        if self.mask_key is not None:
            out[self.mask_key] = kept[..., 0, :] == 0  # (P, *batch, 7)
        return out

    def __repr__(self) -> str:
        return f"ConnectFourCells(mode={self.mode!r}, key={self.key!r}, mask_key={self.mask_key!r})"
