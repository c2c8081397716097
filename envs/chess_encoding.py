"""Chess as tensors: the board encoding and the move numbering behind ``tdhook_rl.envs.chess``.

TorchRL's :class:`~torchrl.envs.ChessEnv` (python-chess backend) observes strings (FEN, SAN,
PGN) and acts over a fixed list of **29,275 SAN strings** (``ChessEnv.san_moves``, read from
``torchrl/envs/custom/san_moves.txt``): an action is the index of the SAN of the move *as
written on the current board*. The same move therefore has different indices in different
positions (``"e4"`` and ``"e4+"`` are two actions; ``"Nbd2"`` exists only where two knights
can reach d2), and one index names different moves (``"Nf3"`` from g1 or from e5). The last
entry of the list is the empty string, never legal. :func:`move_to_action` and
:func:`action_to_move` convert between an index and a python-chess ``Move`` on a given board.

:func:`encode_fen` turns a position into the entries a network reads (the environment's
:class:`~tdhook_rl.envs.chess.FenToPlanes` writes them at every step):

* ``observation``, float ``[18, 8, 8]`` (see :data:`PLANES`), **seen from the side to move**:
  "own" pieces are those of the player to move, and the board is drawn as that player sees
  it, their first rank at the bottom: ``observation[:, row, col]`` is the square of file
  ``col`` and relative rank ``7 - row`` (so ``plt.imshow`` of an observation or of an
  attribution shows a diagram from the mover's side). For white, cell ``row * 8 + col`` is
  python-chess square ``cell ^ 56``; for black it is square ``cell`` (:func:`square_to_cell`).
* ``action_mask``, bool ``[29275]``: exactly the legal moves, over ChessEnv's actions.
* ``legal_actions``, int64 ``[218]``: the ChessEnv action of each legal move (218 is the
  most legal moves a chess position has), padded with ``29275`` (``N_ACTIONS``).
* ``legal_move_codes``, int64 ``[218]``: the same moves as board-independent codes
  ``promotion * 4096 + from_cell * 64 + to_cell`` in the cells above, ``promotion`` being
  0 (none or queen), 1 (knight), 2 (bishop) or 3 (rook) (:func:`move_code`), padded with
  ``16384`` (``N_MOVE_CODES``). A network can score moves from its per-square features and
  scatter the scores onto ``legal_actions`` (see ``tdhook_rl.agents.chess``).

The training data pipeline of the chess agent calls :func:`fen_to_planes` and
:func:`move_code` too, so environment and data share one encoding. python-chess is imported
lazily: ``pip install tdhook-rl[chess]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import torch
from tensordict import TensorDict
from torchrl.envs import ChessEnv

if TYPE_CHECKING:
    import chess

__all__ = [
    "MAX_LEGAL_MOVES",
    "N_ACTIONS",
    "N_MOVE_CODES",
    "PLANES",
    "action_to_move",
    "encode_fen",
    "fen_to_planes",
    "legal_actions",
    "move_code",
    "move_to_action",
    "require_chess",
    "san_moves",
    "square_to_cell",
]

#: names of the planes of ``observation``, in order ("own" = the player to move).
PLANES: tuple[str, ...] = (
    "own_pawn",
    "own_knight",
    "own_bishop",
    "own_rook",
    "own_queen",
    "own_king",
    "their_pawn",
    "their_knight",
    "their_bishop",
    "their_rook",
    "their_queen",
    "their_king",
    "white_to_move",  # all ones when white is to move
    "own_kingside_castling",  # all ones while the right is kept
    "own_queenside_castling",
    "their_kingside_castling",
    "their_queenside_castling",
    "en_passant",  # one at the target square of a legal en passant capture
)
#: the number of ChessEnv actions (SAN strings, the last one empty).
N_ACTIONS = len(ChessEnv.san_moves)
#: the number of move codes (:func:`move_code`), 4 promotion kinds x 64 x 64 cells.
N_MOVE_CODES = 4 * 64 * 64
#: the most legal moves of any chess position.
MAX_LEGAL_MOVES = 218

_SAN_INDEX: dict[str, int] = {}


def require_chess() -> Any:
    """Imports python-chess, or raises an ImportError naming the extra that installs it.

    Returns:
        the ``chess`` module.

    Examples:
        >>> require_chess().Board().legal_moves.count()
        20
    """
    try:
        return importlib.import_module("chess")
    except ImportError as err:
        raise ImportError(
            "tdhook_rl.envs.chess needs python-chess: `pip install tdhook-rl[chess]` "
            "(or `pip install chess`)."
        ) from err


def san_moves() -> list[str]:
    """ChessEnv's action list: action ``i`` is the move written ``san_moves()[i]`` in SAN."""
    return ChessEnv.san_moves


def _san_index() -> dict[str, int]:
    if not _SAN_INDEX:
        _SAN_INDEX.update({san: i for i, san in enumerate(ChessEnv.san_moves)})
    return _SAN_INDEX


def _board(position: str | chess.Board) -> chess.Board:
    return require_chess().Board(position) if isinstance(position, str) else position


def square_to_cell(square: int, white_to_move: bool) -> int:
    """The cell ``row * 8 + col`` of ``observation`` holding python-chess square ``square``.

    Args:
        square: a python-chess square (``0`` = a1, ``7`` = h1, ``63`` = h8).
        white_to_move: the side to move (the board is drawn from its side).

    Returns:
        the flat cell index in ``observation[c].flatten()``.

    Examples:
        >>> square_to_cell(0, True), square_to_cell(0, False)  # a1
        (56, 0)
    """
    return square ^ 56 if white_to_move else square


def fen_to_planes(fen: str | chess.Board) -> torch.Tensor:
    """The ``observation`` of a position: float ``[18, 8, 8]`` planes named in :data:`PLANES`.

    Args:
        fen: a FEN string (or a python-chess ``Board``).

    Returns:
        float32 tensor ``[18, 8, 8]`` of zeros and ones, from the side to move (see the
        module's docstring for the orientation).

    Examples:
        >>> planes = fen_to_planes("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1")
        >>> planes.shape
        torch.Size([18, 8, 8])
        >>> bool(planes[PLANES.index("own_king"), 7, 4])  # the white king on e1, bottom row
        True
    """
    board = _board(fen)
    white = bool(board.turn)
    flip = 56 if white else 0
    data = [0.0] * (len(PLANES) * 64)
    for square, piece in board.piece_map().items():
        plane = piece.piece_type - 1 + (0 if piece.color == board.turn else 6)
        data[plane * 64 + (square ^ flip)] = 1.0
    us, them = board.turn, not board.turn
    constants = (
        white,
        board.has_kingside_castling_rights(us),
        board.has_queenside_castling_rights(us),
        board.has_kingside_castling_rights(them),
        board.has_queenside_castling_rights(them),
    )
    for offset, flag in enumerate(constants):
        if flag:
            start = (12 + offset) * 64
            data[start : start + 64] = [1.0] * 64
    if board.ep_square is not None and board.has_legal_en_passant():
        data[17 * 64 + (board.ep_square ^ flip)] = 1.0
    return torch.tensor(data, dtype=torch.float32).view(len(PLANES), 8, 8)


def move_code(move: chess.Move, white_to_move: bool) -> int:
    """A board-independent code of ``move``: ``promotion * 4096 + from_cell * 64 + to_cell``.

    Cells are those of ``observation`` (:func:`square_to_cell`); ``promotion`` is 0 for no
    promotion or a queen, 1 knight, 2 bishop, 3 rook.

    Args:
        move: a python-chess ``Move``.
        white_to_move: the side playing it.

    Returns:
        an int in ``[0, N_MOVE_CODES)``.

    Examples:
        >>> import chess
        >>> move_code(chess.Move.from_uci("e2e4"), True) == 52 * 64 + 36
        True
    """
    flip = 56 if white_to_move else 0
    promotion = {None: 0, 5: 0, 2: 1, 3: 2, 4: 3}[move.promotion]
    return promotion * 4096 + (move.from_square ^ flip) * 64 + (move.to_square ^ flip)


def move_to_action(board: chess.Board, move: chess.Move) -> int:
    """ChessEnv's action index of a legal ``move`` on ``board`` (the index of its SAN).

    Args:
        board: the position (python-chess ``Board``).
        move: a legal move there.

    Returns:
        the action in ``[0, N_ACTIONS)``.

    Raises:
        ValueError: if the move is not legal on the board.

    Examples:
        >>> import chess
        >>> board = chess.Board()
        >>> action = move_to_action(board, chess.Move.from_uci("g1f3"))
        >>> san_moves()[action], action_to_move(board, action).uci()
        ('Nf3', 'g1f3')
    """
    if not board.is_legal(move):
        raise ValueError(f"move {move.uci()} is not legal in {board.fen()}")
    return _san_index()[board.san(move)]


def action_to_move(board: chess.Board, action: int | torch.Tensor) -> chess.Move:
    """The python-chess ``Move`` that ChessEnv's ``action`` plays on ``board``.

    Args:
        board: the position (python-chess ``Board``).
        action: an index into :func:`san_moves`.

    Returns:
        the legal move whose SAN on this board is ``san_moves()[action]``.

    Raises:
        ValueError: if the action is out of range or names no legal move here (SAN is exact:
            ``"e4+"`` is not legal where e4 gives no check).

    Examples:
        >>> import chess
        >>> action_to_move(chess.Board(), san_moves().index("e4")).uci()
        'e2e4'
    """
    action = int(action)
    if not 0 <= action < N_ACTIONS:
        raise ValueError(f"action must be in [0, {N_ACTIONS}), got {action}")
    san = ChessEnv.san_moves[action]
    try:
        move = board.parse_san(san)
    except ValueError as err:
        raise ValueError(f"action {action} ({san!r}) is not legal in {board.fen()}") from err
    if board.san(move) != san:  # parse_san accepts a wrong check suffix
        raise ValueError(
            f"action {action} ({san!r}) is not legal in {board.fen()} "
            f"(the move is written {board.san(move)!r} there)"
        )
    return move


def legal_actions(board: chess.Board) -> tuple[torch.Tensor, torch.Tensor]:
    """ChessEnv's actions and the move codes of all legal moves of ``board``, in one order.

    Args:
        board: the position (python-chess ``Board``).

    Returns:
        ``(actions, codes)``, two int64 tensors ``[n_legal]`` (see :func:`move_to_action`,
        :func:`move_code`).

    Examples:
        >>> import chess
        >>> actions, codes = legal_actions(chess.Board())
        >>> actions.shape, codes.shape
        (torch.Size([20]), torch.Size([20]))
    """
    index = _san_index()
    moves = list(board.legal_moves)
    white = bool(board.turn)
    actions = [index[board.san(m)] for m in moves]
    codes = [move_code(m, white) for m in moves]
    return torch.tensor(actions, dtype=torch.int64), torch.tensor(codes, dtype=torch.int64)


def encode_fen(fen: str | chess.Board) -> TensorDict:
    """All the entries :class:`FenToPlanes` writes, for one position.

    Args:
        fen: a FEN string (or a python-chess ``Board``).

    Returns:
        a TensorDict (batch size ``[]``) with ``observation``, ``action_mask``,
        ``legal_actions`` and ``legal_move_codes`` (see the module's docstring).

    Examples:
        >>> td = encode_fen("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1")
        >>> int(td["action_mask"].sum()), td["observation"].shape
        (20, torch.Size([18, 8, 8]))
    """
    board = _board(fen)
    actions, codes = legal_actions(board)
    n = actions.numel()
    mask = torch.zeros(N_ACTIONS, dtype=torch.bool)
    mask[actions] = True
    return TensorDict(
        observation=fen_to_planes(board),
        action_mask=mask,
        legal_actions=torch.nn.functional.pad(actions, (0, MAX_LEGAL_MOVES - n), value=N_ACTIONS),
        legal_move_codes=torch.nn.functional.pad(
            codes, (0, MAX_LEGAL_MOVES - n), value=N_MOVE_CODES
        ),
        batch_size=[],
    )
