"""Removing chess pieces: the structured perturbation of the chess board encoding (see
:class:`~tdhook_rl.attribution.board_perturbations.Structured`).

The planes of :func:`~tdhook_rl.envs.chess_encoding.fen_to_planes` are read back into a
python-chess board (:func:`planes_to_board`), the pieces are taken off, and the result is
encoded again by the environment's own :func:`~tdhook_rl.envs.chess_encoding.encode_fen`, so
the observation and the legal-move entries (``action_mask``, ``legal_actions``,
``legal_move_codes``) of every perturbed board are those the environment would write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase

from tdhook_rl.attribution.board_perturbations import BoardPerturbation
from tdhook_rl.envs.chess_encoding import PLANES, encode_fen, require_chess

if TYPE_CHECKING:
    import chess

__all__ = ["DERIVED_KEYS", "ChessSquares", "planes_to_board", "remove_pieces"]

#: the entries :func:`encode_fen` derives from the board besides ``observation``
DERIVED_KEYS = ("action_mask", "legal_actions", "legal_move_codes")
_KINGS = (PLANES.index("own_king"), PLANES.index("their_king"))
_PIECES = [p for p in range(12) if p not in _KINGS]


def planes_to_board(planes: torch.Tensor) -> chess.Board:
    """The python-chess board an ``observation`` ``[18, 8, 8]`` encodes.

    Pieces, side to move, castling rights and the en passant square are read back; the
    move clocks are not encoded (halfmove 0, fullmove 1), and an en passant square appears
    only where the encoding marks it (a legal en passant capture).

    Examples:
        >>> from tdhook_rl.envs.chess_encoding import fen_to_planes
        >>> fen = "r3k2r/8/8/3pP3/8/8/8/R3K2R w Kq d6 0 2"
        >>> planes_to_board(fen_to_planes(fen)).fen()
        'r3k2r/8/8/3pP3/8/8/8/R3K2R w Kq d6 0 1'
    """
    chess = require_chess()
    planes = planes.detach().cpu()
    white = bool(planes[PLANES.index("white_to_move")].any())
    own = chess.WHITE if white else chess.BLACK
    flip = 56 if white else 0
    board = chess.Board(None)
    board.turn = own
    for plane, cell in (planes[:12].flatten(1) > 0.5).nonzero().tolist():
        color = own if plane < 6 else not own
        board.set_piece_at(cell ^ flip, chess.Piece(plane % 6 + 1, color))
    rights = 0
    homes = {  # (color, side) -> the rook's home square
        (chess.WHITE, "k"): chess.H1,
        (chess.WHITE, "q"): chess.A1,
        (chess.BLACK, "k"): chess.H8,
        (chess.BLACK, "q"): chess.A8,
    }
    for name, color, side in (
        ("own_kingside_castling", own, "k"),
        ("own_queenside_castling", own, "q"),
        ("their_kingside_castling", not own, "k"),
        ("their_queenside_castling", not own, "q"),
    ):
        if bool(planes[PLANES.index(name)].any()):
            rights |= chess.BB_SQUARES[homes[(color, side)]]
    board.castling_rights = rights
    ep = planes[PLANES.index("en_passant")].flatten().nonzero().flatten().tolist()
    board.ep_square = ep[0] ^ flip if ep else None
    return board


def remove_pieces(board: chess.Board, squares: Sequence[int]) -> chess.Board:
    """A copy of ``board`` without the pieces on ``squares`` (kings stay: a position without
    a king is no chess position), castling rights cleaned (removing a rook drops the right
    that needed it: python-chess's ``clean_castling_rights``), and the en passant square
    dropped when the pawn that could be taken is gone (python-chess would still offer the
    capture).

    Examples:
        >>> import chess
        >>> board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1")
        >>> remove_pieces(board, [chess.H1, chess.E8]).fen()
        'r3k2r/8/8/8/8/8/8/R3K3 w Qkq - 0 1'
    """
    chess = require_chess()
    out = board.copy(stack=False)
    for square in squares:
        piece = out.piece_at(square)
        if piece is not None and piece.piece_type != chess.KING:
            out.remove_piece_at(square)
    out.castling_rights = out.clean_castling_rights()
    if out.status() & chess.STATUS_INVALID_EP_SQUARE:  # the pawn that just moved two is gone
        out.ep_square = None
    return out


class ChessSquares(BoardPerturbation):
    """Takes pieces off the squares of chess observations (``[18, 8, 8]`` from
    :class:`~tdhook_rl.envs.chess.FenToPlanes`) and re-encodes every perturbed board.

    A square is a cell ``row * 8 + col`` of the observation (seen from the side to move,
    :func:`~tdhook_rl.envs.chess_encoding.square_to_cell`); its 18 plane entries form one
    feature group. Removing a square's piece keeps the side to move, clears the castling
    rights that needed a removed rook, and keeps an en passant capture only where it is
    still legal; kings are never removed (their squares' attribution is 0 for feature
    ablation and SARFA). Empty squares are left as they are. The perturbed boards are
    encoded by :func:`~tdhook_rl.envs.chess_encoding.encode_fen`, which also writes their
    legal moves (``action_mask``, ``legal_actions``, ``legal_move_codes``), computed by
    python-chess. Identical perturbed boards of one sample are encoded once.

    python-chess runs on the host, one board at a time: a batch of ``B`` positions with
    ``P`` coalitions encodes up to ``P * B`` boards (feature ablation: one per piece).

    Args:
        key: the observation entry.
        derived: the legal-move entries the policy reads (written for every perturbed
            board); ``()`` for a module that reads the observation only (a value head).

    Examples:
        >>> from tdhook_rl.envs.chess_encoding import encode_fen
        >>> td = encode_fen("4k3/8/8/8/8/8/8/R3K3 w Q - 0 1")
        >>> absent = torch.zeros(1, 64, dtype=torch.bool)
        >>> absent[0, 56] = True   # cell 56: a1, the rook
        >>> out = ChessSquares().perturb(td["observation"], td, absent)
        >>> out["observation"].shape, int(out["observation"][0, :12].sum())
        (torch.Size([1, 18, 8, 8]), 2)
        >>> bool(out["observation"][0, PLANES.index("own_queenside_castling")].any())
        False
    """

    shape = (len(PLANES), 8, 8)
    n_squares = 64

    def __init__(self, key: NestedKey = "observation", derived: Sequence[str] = DERIVED_KEYS):
        unknown = [k for k in derived if k not in DERIVED_KEYS]
        if unknown:
            raise ValueError(f"derived entries must be among {list(DERIVED_KEYS)}, got {unknown}")
        self.key = key
        self.derived = tuple(derived)

    def square_labels(self) -> torch.Tensor:
        return torch.arange(64).view(1, 8, 8)

    def perturb(
        self, board: torch.Tensor, context: TensorDictBase, absent: torch.Tensor
    ) -> dict[NestedKey, torch.Tensor]:
        batch = board.shape[:-3]
        flat = board.detach().reshape(-1, *self.shape).cpu()  # (B, 18, 8, 8)
        boards = [planes_to_board(p) for p in flat]
        # the cells whose piece can be removed, (B, 64): a piece that is not a king
        removable = flat[:, _PIECES].flatten(2).amax(1) > 0.5
        absent = absent.cpu()
        chosen = absent[:, None, :] & removable[None]  # (P, B, 64)
        flip = [56 if b.turn else 0 for b in boards]
        cache: dict[tuple[int, tuple[int, ...]], TensorDict] = {}
        rows = []
        for p_cells in chosen:
            for b, cells in enumerate(p_cells):
                slot = (b, tuple(cells.nonzero().flatten().tolist()))
                if slot not in cache:
                    squares = [cell ^ flip[b] for cell in slot[1]]
                    cache[slot] = encode_fen(remove_pieces(boards[b], squares))
                rows.append(cache[slot])
        empty = not rows  # no sample or no coalition: entries of the right shapes, empty
        stacked: TensorDictBase = torch.stack(  # type: ignore[assignment]
            rows or [encode_fen(require_chess().Board())]
        )
        if empty:
            stacked = stacked[:0]
        encoded = stacked.reshape(absent.shape[0], *batch).to(board.device)
        out: dict[NestedKey, torch.Tensor] = {self.key: encoded["observation"].to(board.dtype)}
        for name in self.derived:
            out[name] = encoded[name]
        return out

    def __repr__(self) -> str:
        return f"ChessSquares(key={self.key!r}, derived={list(self.derived)})"
