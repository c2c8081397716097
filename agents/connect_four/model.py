"""The Connect Four agent: a small conv net with a move head and a win/draw/loss head.

The network reads ``observation`` (``[3, 6, 7]`` planes seen by the player to move, see
:mod:`tdhook_rl.envs.connect_four`) and is packaged as TorchRL's shared-trunk actor-critic,
an :class:`~torchrl.modules.ActorValueOperator`:

* the trunk, a 4x4 convolution (each window can hold a whole four-in-a-row) and a two-layer
  MLP, writes ``hidden`` (``[256]`` features);
* the policy, a :class:`~torchrl.modules.ProbabilisticActor`, writes the move ``logits``
  (``[7]``, a linear map of ``hidden``) and samples ``action`` from a
  :class:`~torchrl.modules.MaskedCategorical` over ``logits`` and ``action_mask`` (illegal
  columns never get probability), with its ``action_log_prob``;
* the value head writes ``win_logits`` (``[3]``: win, draw, loss of the player to move) and
  ``state_value`` (``[1]``, ``P(win) - P(loss)`` in ``[-1, 1]``, the expected outcome).

Calling the whole operator computes everything at once; ``get_policy_operator()`` and
``get_value_operator()`` give the two halves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchrl.modules import ActorValueOperator

from tdhook_rl.agents._board import OUTCOMES, expected_outcome, load_trained, masked_actor_critic
from tdhook_rl.envs.connect_four import COLUMNS, ROWS

__all__ = [
    "CHECKPOINT",
    "DEFAULT_CONFIG",
    "OUTCOMES",
    "Trunk",
    "ValueHead",
    "load",
    "make_agent",
]

CHECKPOINT = Path(__file__).with_name("checkpoint.pt")
DEFAULT_CONFIG: dict[str, int] = {"channels": 64, "hidden": 256, "value_hidden": 64}


class Trunk(nn.Module):
    """A 4x4 convolution (every four-in-a-row fits in one 4x4 window) then an MLP:
    ``[..., 3, 6, 7]`` -> ``[..., hidden]``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 4)  # (3, 6, 7) -> (channels, 3, 4)
        self.mlp = nn.Sequential(
            nn.Linear(channels * (ROWS - 3) * (COLUMNS - 3), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        batch = observation.shape[:-3]
        # conv2d takes one batch dimension: (*batch, 3, 6, 7) -> (B, 3, 6, 7)
        features = torch.relu(self.conv(observation.reshape(-1, *observation.shape[-3:])))
        return self.mlp(features.flatten(-3)).reshape(*batch, -1)


class ValueHead(nn.Module):
    """``hidden`` -> ``win_logits`` (win, draw, loss) and ``state_value = P(win) - P(loss)``."""

    def __init__(self, hidden: int, value_hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(hidden, value_hidden), nn.ReLU(), nn.Linear(value_hidden, len(OUTCOMES))
        )

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        win_logits = self.mlp(hidden)
        return win_logits, expected_outcome(win_logits)


def make_agent(
    config: dict[str, int] | None = None, device: torch.device | str = "cpu"
) -> ActorValueOperator:
    """Builds an untrained agent.

    Args:
        config: ``channels`` (of the 4x4 convolution), ``hidden`` (width of the trunk's
            MLP) and ``value_hidden`` (of the value head); defaults to :data:`DEFAULT_CONFIG`.
        device: where the parameters live.

    Returns:
        an :class:`~torchrl.modules.ActorValueOperator` reading ``observation`` and
        ``action_mask`` and writing ``hidden``, ``logits``, ``action``, ``action_log_prob``,
        ``win_logits`` and ``state_value``.

    Examples:
        >>> from tdhook_rl.envs.connect_four import ConnectFourEnv
        >>> agent = make_agent()
        >>> td = agent(ConnectFourEnv(batch_size=[5]).reset())
        >>> td["win_logits"].shape, td["action"].shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    config = {**DEFAULT_CONFIG, **(config or {})}
    hidden = config["hidden"]
    return masked_actor_critic(
        Trunk(config["channels"], hidden),
        nn.Linear(hidden, COLUMNS),
        ["hidden"],
        COLUMNS,
        ValueHead(hidden, config["value_hidden"]),
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
        >>> from tdhook_rl.envs.connect_four import ConnectFourEnv
        >>> from tdhook_rl.targets import ActionLogProb, Index
        >>> explained = thr.Attributed(
        ...     load(),
        ...     "saliency",
        ...     inputs=["observation"],
        ...     targets={"move": ActionLogProb(), "win": Index("win_logits", 0)},
        ... )
        >>> td = explained(ConnectFourEnv(batch_size=[8]).reset())
        >>> td["attribution", "win", "observation"].shape
        torch.Size([8, 3, 6, 7])
    """
    return load_trained(
        make_agent,
        CHECKPOINT if checkpoint is None else Path(checkpoint),
        device,
        "`python -m tdhook_rl.agents.connect_four.train`.",
    )
