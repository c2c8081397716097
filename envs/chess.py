"""Chess for TorchRL: ChessEnv with a tensor board encoding and the legal-move mask.

:func:`make_chess_env` builds a TorchRL :class:`~torchrl.envs.ChessEnv` (python-chess
backend) whose :class:`FenToPlanes` transform writes, at every reset and step, the tensors a
network reads: ``observation`` (``[18, 8, 8]`` planes seen from the side to move),
``action_mask`` over ChessEnv's 29,275 SAN actions, ``legal_actions`` and
``legal_move_codes``. The encoding and the move numbering live in
:mod:`tdhook_rl.envs.chess_encoding` and are re-exported here.

ChessEnv's conventions kept here: ``("next", "reward")`` is ``1`` for the player who just
moved when the move mates, ``0.5`` for a draw, ``0`` otherwise; ``turn`` is ``True`` when
white is to move; a game ends on checkmate, stalemate, insufficient material, the 75-move
rule, fivefold repetition, or 50 moves without capture or pawn move (the final position's
``action_mask`` is then all ``False``). ``env.reset(TensorDict(fen=...), set_state=True)``
starts from a given position. ChessEnv's ``set_seed`` does nothing: random actions come from
torch's global generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import Binary, Bounded, Composite
from torchrl.envs import ActionMask, ChessEnv, Compose, EnvBase, Transform, TransformedEnv

from tdhook_rl.envs.chess_encoding import (
    MAX_LEGAL_MOVES,
    N_ACTIONS,
    N_MOVE_CODES,
    PLANES,
    action_to_move,
    encode_fen,
    fen_to_planes,
    legal_actions,
    move_code,
    move_to_action,
    require_chess,
    san_moves,
    square_to_cell,
)

__all__ = [
    "MAX_LEGAL_MOVES",
    "N_ACTIONS",
    "N_MOVE_CODES",
    "PLANES",
    "FenToPlanes",
    "action_to_move",
    "encode_fen",
    "fen_to_planes",
    "legal_actions",
    "make_chess_env",
    "move_code",
    "move_to_action",
    "require_chess",
    "san_moves",
    "square_to_cell",
]


def _as_fens(value: Any, batch_shape: torch.Size) -> list[str]:
    """The FEN strings of a ``fen`` entry (a string, NonTensorData or NonTensorStack)."""
    if isinstance(value, str):
        return [value]
    data = value.tolist() if hasattr(value, "tolist") else getattr(value, "data", value)
    if isinstance(data, str):
        return [data]
    flat: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            flat.append(item)
        else:
            for sub in item:
                walk(sub)

    walk(data)
    if len(flat) != max(batch_shape.numel(), 1):
        raise ValueError(f"expected {batch_shape.numel()} FEN strings, got {len(flat)}")
    return flat


class FenToPlanes(Transform):
    """Writes ``observation``, ``action_mask``, ``legal_actions`` and ``legal_move_codes``
    from ChessEnv's ``fen`` (see :mod:`tdhook_rl.envs.chess` for the encoding).

    Runs on every reset and step, for any batch shape (one python-chess board per game).
    :func:`make_chess_env` appends it to a ``ChessEnv(include_fen=True, mask_actions=False)``
    followed by TorchRL's :class:`~torchrl.envs.ActionMask`, so random actions are legal.

    Args:
        fen_key: the entry holding the FEN string.

    Examples:
        >>> from torchrl.envs import ChessEnv, TransformedEnv
        >>> env = TransformedEnv(ChessEnv(include_fen=True, mask_actions=False), FenToPlanes())
        >>> td = env.reset()
        >>> td["observation"].shape, int(td["action_mask"].sum())
        (torch.Size([18, 8, 8]), 20)
    """

    OUT_KEYS = ("observation", "action_mask", "legal_actions", "legal_move_codes")

    def __init__(self, fen_key: str = "fen") -> None:
        super().__init__(in_keys=[fen_key], out_keys=list(self.OUT_KEYS))

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        value = next_tensordict.get(self.in_keys[0], None)
        if value is None:
            raise KeyError(
                f"FenToPlanes reads {self.in_keys[0]!r}, which is not in the TensorDict; "
                "build the env with ChessEnv(include_fen=True)."
            )
        batch = next_tensordict.batch_size
        encoded = torch.stack([encode_fen(fen) for fen in _as_fens(value, batch)])
        encoded = encoded.reshape(batch).to(next_tensordict.device or "cpu")
        next_tensordict.update(encoded)
        return next_tensordict

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._call(tensordict_reset)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._call(tensordict)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        shape = observation_spec.shape
        device = observation_spec.device
        observation_spec["observation"] = Bounded(
            0.0, 1.0, shape=(*shape, len(PLANES), 8, 8), dtype=torch.float32, device=device
        )
        observation_spec["action_mask"] = Binary(
            n=N_ACTIONS, shape=(*shape, N_ACTIONS), dtype=torch.bool, device=device
        )
        observation_spec["legal_actions"] = Bounded(
            0, N_ACTIONS, shape=(*shape, MAX_LEGAL_MOVES), dtype=torch.int64, device=device
        )
        observation_spec["legal_move_codes"] = Bounded(
            0, N_MOVE_CODES, shape=(*shape, MAX_LEGAL_MOVES), dtype=torch.int64, device=device
        )
        return observation_spec


class _MaskedChessEnv(TransformedEnv):
    """A TransformedEnv whose ``rand_action`` samples legal moves from ``action_mask``.

    ChessEnv overrides ``rand_action``, and TransformedEnv refuses to call an overridden base
    ``rand_action`` below transforms that touch the action spec (ActionMask does), so random
    actions are drawn here from the masked, transformed spec instead.
    """

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("action_mask", None)
        if mask is not None:
            self.full_action_spec["action"].update_mask(mask)
        return EnvBase.rand_action(self, tensordict)


def make_chess_env(
    *,
    include_san: bool = False,
    include_pgn: bool = False,
    stateful: bool = True,
    extra_transforms: Sequence[Transform] = (),
) -> TransformedEnv:
    """A ChessEnv with :class:`FenToPlanes` and :class:`~torchrl.envs.ActionMask`.

    Args:
        include_san: also write ``san`` (the SAN of the move that led to the position).
        include_pgn: also write ``pgn`` (the game so far; slow for long games).
        stateful: ChessEnv's ``stateful`` (``False``: the board is read back from ``fen`` at
            every step, so a step may start from any position given in the input).
        extra_transforms: transforms appended after the encoding.

    Returns:
        a :class:`~torchrl.envs.TransformedEnv` writing ``fen``, ``turn``, ``observation``,
        ``action_mask``, ``legal_actions`` and ``legal_move_codes``, acting over
        ``Categorical(29275)`` (ChessEnv's SAN list).

    Examples:
        >>> env = make_chess_env()
        >>> rollout = env.rollout(4)
        >>> rollout["observation"].shape
        torch.Size([4, 18, 8, 8])
        >>> bool(rollout["action_mask"].gather(-1, rollout["action"][:, None]).all())
        True
    """
    require_chess()
    base = ChessEnv(
        include_fen=True,
        include_san=include_san,
        include_pgn=include_pgn,
        stateful=stateful,
        mask_actions=False,
    )
    return _MaskedChessEnv(base, Compose(FenToPlanes(), ActionMask(), *extra_transforms))
