"""The chess agent: a small residual conv net with a move head and a win/draw/loss head.

The network reads the entries written by :class:`~tdhook_rl.envs.chess.FenToPlanes`
(``observation`` ``[18, 8, 8]`` seen from the side to move, ``legal_actions`` and
``legal_move_codes``, ``action_mask``) and is packaged as TorchRL's shared-trunk
actor-critic, an :class:`~torchrl.modules.ActorValueOperator`:

* the trunk, a 3x3 convolution and residual blocks of two 3x3 convolutions, writes
  ``hidden`` (``[channels, 8, 8]``, one feature vector per square);
* the policy, a :class:`~torchrl.modules.ProbabilisticActor`, writes ``logits`` over
  ChessEnv's 29,275 SAN actions and samples ``action`` from a
  :class:`~torchrl.modules.MaskedCategorical` over ``logits`` and ``action_mask``, with its
  ``action_log_prob``. The move scores are cheap: each square gets a "from" vector and four
  "to" vectors (no promotion or queen, knight, bishop, rook); a legal move scores
  ``<from[source], to_promotion[target]> / sqrt(d)`` plus a learned bias per move code, and
  the scores are scattered onto the move's ChessEnv action (``legal_actions``). Actions that
  are not legal get ``ILLEGAL_LOGIT``;
* the value head writes ``win_logits`` (``[3]``: win, draw, loss of the side to move, trained
  on Stockfish's evaluation converted to W/D/L, see :mod:`.data`) and ``state_value``
  (``[1]``, ``P(win) - P(loss)`` in ``[-1, 1]``).

Calling the whole operator computes everything at once; ``get_policy_operator()`` and
``get_value_operator()`` give the two halves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchrl.modules import ActorValueOperator

from tdhook_rl.agents._board import OUTCOMES, expected_outcome, load_trained, masked_actor_critic
from tdhook_rl.envs.chess import N_ACTIONS, N_MOVE_CODES, PLANES

__all__ = [
    "CHECKPOINT",
    "DEFAULT_CONFIG",
    "ILLEGAL_LOGIT",
    "OUTCOMES",
    "MoveHead",
    "Trunk",
    "ValueHead",
    "load",
    "make_agent",
]

CHECKPOINT = Path(__file__).with_name("checkpoint.pt")
#: the logit of actions that are not legal (``MaskedCategorical`` masks them anyway)
ILLEGAL_LOGIT = -1e9
DEFAULT_CONFIG: dict[str, int] = {"channels": 48, "blocks": 4, "move_dim": 32, "value_hidden": 128}


class Trunk(nn.Module):
    """3x3 convolutions with residual blocks: ``[..., 18, 8, 8]`` -> ``[..., channels, 8, 8]``."""

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(len(PLANES), channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(channels, channels, 3, padding=1),
            )
            for _ in range(blocks)
        )

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        batch = observation.shape[:-3]
        # conv2d takes one batch dimension: (*batch, 18, 8, 8) -> (B, 18, 8, 8)
        h = torch.relu(self.stem(observation.reshape(-1, *observation.shape[-3:])))
        for block in self.blocks:
            h = torch.relu(h + block(h))
        return h.reshape(*batch, *h.shape[-3:])


class MoveHead(nn.Module):
    """Scores the legal moves from the per-square features and scatters them onto ChessEnv's
    actions: ``hidden [..., C, 8, 8]``, ``legal_actions``, ``legal_move_codes`` ``[..., 218]``
    -> ``logits [..., 29275]``."""

    def __init__(self, channels: int, move_dim: int) -> None:
        super().__init__()
        self.move_dim = move_dim
        self.source = nn.Conv2d(channels, move_dim, 1)
        self.target = nn.Conv2d(channels, 4 * move_dim, 1)  # one per promotion kind
        self.bias = nn.Embedding(N_MOVE_CODES, 1)
        nn.init.zeros_(self.bias.weight)

    def legal_logits(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The scores of the moves ``codes`` ``[..., L]`` -> ``[..., L]`` (padding entries,
        ``codes == N_MOVE_CODES``, get arbitrary values: mask them)."""
        batch = hidden.shape[:-3]
        h = hidden.reshape(-1, *hidden.shape[-3:])  # (B, C, 8, 8)
        codes = codes.reshape(h.shape[0], -1).clamp(max=N_MOVE_CODES - 1)  # (B, L)
        d = self.move_dim
        source = self.source(h).flatten(2).transpose(1, 2)  # (B, 64, d)
        target = self.target(h).view(h.shape[0], 4, d, 64).transpose(2, 3)  # (B, 4, 64, d)
        target = target.reshape(h.shape[0], 4 * 64, d)  # (B, 256, d), row promotion * 64 + cell
        src = (codes % 4096) // 64
        dst = (codes // 4096) * 64 + codes % 64
        q = source.gather(1, src.unsqueeze(-1).expand(-1, -1, d))  # (B, L, d)
        k = target.gather(1, dst.unsqueeze(-1).expand(-1, -1, d))  # (B, L, d)
        logits = (q * k).sum(-1) / math.sqrt(d) + self.bias(codes).squeeze(-1)
        return logits.reshape(*batch, -1)

    def forward(
        self, hidden: torch.Tensor, legal_actions: torch.Tensor, legal_move_codes: torch.Tensor
    ) -> torch.Tensor:
        batch = legal_actions.shape[:-1]
        legal = self.legal_logits(hidden, legal_move_codes).reshape(-1, legal_actions.shape[-1])
        actions = legal_actions.reshape(legal.shape)
        # one spare column takes the padding (action N_ACTIONS), then is dropped
        full = legal.new_full((legal.shape[0], N_ACTIONS + 1), ILLEGAL_LOGIT)
        full = full.scatter(1, actions, legal)[:, :N_ACTIONS]
        return full.reshape(*batch, N_ACTIONS)


class ValueHead(nn.Module):
    """``hidden`` -> ``win_logits`` (win, draw, loss) and ``state_value = P(win) - P(loss)``."""

    def __init__(self, channels: int, value_hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, 8, 1)
        self.mlp = nn.Sequential(
            nn.Linear(8 * 64, value_hidden), nn.ReLU(), nn.Linear(value_hidden, len(OUTCOMES))
        )

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = hidden.shape[:-3]
        h = torch.relu(self.reduce(hidden.reshape(-1, *hidden.shape[-3:]))).flatten(1)
        win_logits = self.mlp(h).reshape(*batch, len(OUTCOMES))
        return win_logits, expected_outcome(win_logits)


def make_agent(
    config: dict[str, int] | None = None, device: torch.device | str = "cpu"
) -> ActorValueOperator:
    """Builds an untrained agent.

    Args:
        config: ``channels`` and ``blocks`` of the trunk, ``move_dim`` (the size of the from/to
            vectors of the move head) and ``value_hidden`` (of the value head); defaults to
            :data:`DEFAULT_CONFIG`.
        device: where the parameters live.

    Returns:
        an :class:`~torchrl.modules.ActorValueOperator` reading ``observation``,
        ``legal_actions``, ``legal_move_codes`` and ``action_mask`` and writing ``hidden``,
        ``logits``, ``action``, ``action_log_prob``, ``win_logits`` and ``state_value``.

    Examples:
        >>> from tdhook_rl.envs.chess import make_chess_env
        >>> agent = make_agent()
        >>> td = agent(make_chess_env().reset())
        >>> td["win_logits"].shape, td["logits"].shape
        (torch.Size([3]), torch.Size([29275]))
        >>> bool(td["action_mask"][td["action"]])
        True
    """
    config = {**DEFAULT_CONFIG, **(config or {})}
    channels = config["channels"]
    return masked_actor_critic(
        Trunk(channels, config["blocks"]),
        MoveHead(channels, config["move_dim"]),
        ["hidden", "legal_actions", "legal_move_codes"],
        N_ACTIONS,
        ValueHead(channels, config["value_hidden"]),
        device,
    )


def load(device: torch.device | str = "cpu", checkpoint: str | Path | None = None) -> Any:
    """Loads the trained agent (in eval mode) from ``checkpoint.pt``.

    Args:
        device: where to put the parameters.
        checkpoint: another checkpoint written by ``train.py``; the shipped one by default
            (the same keyword as every shipped agent's ``load``).

    Returns:
        the trained :class:`~torchrl.modules.ActorValueOperator` (see :func:`make_agent`).
        Like every TorchRL actor it plays its most probable legal move by default; sample
        moves under ``set_exploration_type(ExplorationType.RANDOM)``.

    Examples:
        >>> import tdhook_rl as thr
        >>> from tdhook_rl.envs.chess import make_chess_env
        >>> from tdhook_rl.targets import ActionLogProb, Index
        >>> explained = thr.Attributed(
        ...     load(),
        ...     "saliency",
        ...     inputs=["observation"],
        ...     targets={"move": ActionLogProb(), "win": Index("win_logits", 0)},
        ... )
        >>> td = explained(make_chess_env().reset())
        >>> td["attribution", "win", "observation"].shape
        torch.Size([18, 8, 8])
    """
    return load_trained(
        make_agent,
        CHECKPOINT if checkpoint is None else Path(checkpoint),
        device,
        "`python -m tdhook_rl.agents.chess.train` (data: `python -m "
        "tdhook_rl.agents.chess.data`, needs Stockfish).",
    )
