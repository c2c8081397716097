"""Chess concepts of a position, from python-chess, seen from the side to move.

Each function takes a :class:`chess.Board` (or a FEN string) and returns a number;
:func:`chess_concepts` computes all of :data:`CHESS_CONCEPTS` for many positions at once, as
label columns for :func:`~tdhook_rl.concepts.across.probe_across` or
:func:`~tdhook_rl.probes.fit_probes`. "Own" is the side to move (the chess agent's
observation is drawn from its view), "their" the other side. Attacks are python-chess's
(:meth:`chess.Board.attackers`): pinned pieces still attack, as in a static exchange count.

* ``material_balance``: own minus their material, pawn 1, knight and bishop 3, rook 5,
  queen 9;
* ``in_check``: the side to move is in check;
* ``mate_in_one``: the side to move has a mating move;
* ``mate_threat``: the other side would mate in one if it were its move (the side to move
  passes; ``False`` when in check, where passing is not defined);
* ``own_hanging`` / ``their_hanging``: pieces (king aside) attacked by the other side and
  defended by none of their own;
* ``mobility``: legal moves of the side to move; ``their_mobility``: those of the other
  side with the turn handed over (en passant dropped);
* ``king_danger`` / ``their_king_danger``: attacks by the other side on the king's square
  and its neighbours (each attacker of each square counted, McGrath et al.'s "king safety"
  in its simplest form);
* ``own_passed_pawns`` / ``their_passed_pawns``: pawns with no enemy pawn ahead of them on
  their file or the adjacent files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import chess

__all__ = [
    "CHESS_CONCEPTS",
    "PIECE_VALUES",
    "chess_concepts",
    "hanging_pieces",
    "in_check",
    "king_danger",
    "mate_in_one",
    "mate_threat",
    "material_balance",
    "mobility",
    "passed_pawns",
]

#: pawn, knight, bishop, rook, queen, king (python-chess piece types 1..6)
PIECE_VALUES = {1: 1, 2: 3, 3: 3, 4: 5, 5: 9, 6: 0}


def _chess() -> Any:
    import chess  # python-chess: a main dependency of tdhook-rl

    return chess


def _board(board: chess.Board | str) -> chess.Board:
    chess = _chess()
    if isinstance(board, str):
        try:
            return chess.Board(board)
        except ValueError as err:
            raise ValueError(f"{board!r} is not a FEN: {err}") from None
    if not isinstance(board, chess.Board):
        raise TypeError(f"expected a chess.Board or a FEN string, got {type(board).__name__}")
    return board


def material_balance(board: chess.Board | str) -> int:
    """Own minus their material (:data:`PIECE_VALUES`).

    Examples:
        >>> material_balance("4k3/8/8/8/8/8/8/Q3K3 w - - 0 1"), material_balance(
        ...     "4k3/8/8/8/8/8/8/Q3K3 b - - 0 1")
        (9, -9)
    """
    b = _board(board)
    total = 0
    for piece in b.piece_map().values():
        value = PIECE_VALUES[piece.piece_type]
        total += value if piece.color == b.turn else -value
    return total


def in_check(board: chess.Board | str) -> bool:
    """Whether the side to move is in check."""
    return bool(_board(board).is_check())


def mate_in_one(board: chess.Board | str) -> bool:
    """Whether the side to move has a move that mates.

    Examples:
        >>> mate_in_one("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1")  # Ra8#
        True
    """
    b = _board(board).copy(stack=False)
    for move in list(b.legal_moves):
        b.push(move)
        mate = b.is_checkmate()
        b.pop()
        if mate:
            return True
    return False


def _passed(b: chess.Board) -> chess.Board:
    """The position with the turn handed to the other side (en passant dropped)."""
    flipped = b.copy(stack=False)
    flipped.turn = not flipped.turn
    flipped.ep_square = None
    return flipped


def mate_threat(board: chess.Board | str) -> bool:
    """Whether the other side would mate in one if the side to move passed (``False`` when
    the side to move is in check)."""
    b = _board(board)
    return False if b.is_check() else mate_in_one(_passed(b))


def hanging_pieces(board: chess.Board | str, own: bool = True) -> int:
    """Pieces of one side (the side to move when ``own``), king aside, attacked by the
    other side and defended by none of their own."""
    b = _board(board)
    color = b.turn if own else not b.turn
    count = 0
    for square, piece in b.piece_map().items():
        if piece.color != color or piece.piece_type == 6:
            continue
        if b.is_attacked_by(not color, square) and not b.is_attacked_by(color, square):
            count += 1
    return count


def mobility(board: chess.Board | str, own: bool = True) -> int:
    """Legal moves of the side to move (``own``) or of the other side given the turn."""
    b = _board(board)
    return (b if own else _passed(b)).legal_moves.count()


def king_danger(board: chess.Board | str, own: bool = True) -> int:
    """Attacks by the other side on one king's square and its (up to 8) neighbours."""
    chess = _chess()
    b = _board(board)
    color = b.turn if own else not b.turn
    king = b.king(color)
    if king is None:
        raise ValueError(f"{b.fen()!r} has no {'white' if color else 'black'} king")
    zone = chess.SquareSet(chess.BB_KING_ATTACKS[king]) | chess.SquareSet.from_square(king)
    return sum(len(b.attackers(not color, sq)) for sq in zone)


def passed_pawns(board: chess.Board | str, own: bool = True) -> int:
    """Pawns of one side with no enemy pawn ahead on their file or an adjacent one.

    Examples:
        >>> passed_pawns("4k3/8/8/3P4/8/8/8/4K3 w - - 0 1")
        1
    """
    chess = _chess()
    b = _board(board)
    color = b.turn if own else not b.turn
    enemy = b.pieces(chess.PAWN, not color)
    count = 0
    for sq in b.pieces(chess.PAWN, color):
        f, r = chess.square_file(sq), chess.square_rank(sq)
        ahead = range(r + 1, 8) if color == chess.WHITE else range(0, r)
        blocked = any(
            chess.square(ff, rr) in enemy for ff in (f - 1, f, f + 1) if 0 <= ff < 8 for rr in ahead
        )
        count += not blocked
    return count


def _own(fn: Callable[..., int], own: bool) -> Callable[[chess.Board], int]:
    return lambda b: fn(b, own)


#: name -> function of a board; bools are binary concepts (probed by classification)
CHESS_CONCEPTS: dict[str, Callable[[chess.Board], int | bool]] = {
    "material_balance": material_balance,
    "in_check": in_check,
    "mate_in_one": mate_in_one,
    "mate_threat": mate_threat,
    "own_hanging": _own(hanging_pieces, True),
    "their_hanging": _own(hanging_pieces, False),
    "mobility": _own(mobility, True),
    "their_mobility": _own(mobility, False),
    "king_danger": _own(king_danger, True),
    "their_king_danger": _own(king_danger, False),
    "own_passed_pawns": _own(passed_pawns, True),
    "their_passed_pawns": _own(passed_pawns, False),
}
_BINARY = {"in_check", "mate_in_one", "mate_threat"}


def chess_concepts(
    boards: Sequence[chess.Board | str], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Every concept of :data:`CHESS_CONCEPTS` (or ``names``) for each position.

    Args:
        boards: python-chess boards or FEN strings.
        names: the concepts to compute; all by default.

    Returns:
        ``{name: [N]}``: bool for ``in_check``, ``mate_in_one``, ``mate_threat``, float32
        for the counts and the material balance.

    Examples:
        >>> c = chess_concepts(["rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"])
        >>> int(c["mobility"][0]), int(c["material_balance"][0]), bool(c["in_check"][0])
        (20, 0, False)
    """
    names = list(CHESS_CONCEPTS if names is None else names)
    unknown = [n for n in names if n not in CHESS_CONCEPTS]
    if unknown:
        raise KeyError(f"unknown chess concepts {unknown}; known: {sorted(CHESS_CONCEPTS)}")
    parsed = [_board(b) for b in boards]
    out = {}
    for name in names:
        values = [CHESS_CONCEPTS[name](b) for b in parsed]
        dtype = torch.bool if name in _BINARY else torch.float32
        out[name] = torch.tensor(values, dtype=dtype)
    return out
