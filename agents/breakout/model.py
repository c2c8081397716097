"""The Breakout agent: MinAtar's small conv net as a shared-trunk actor-critic.

The network reads ``observation`` (``[4, 10, 10]``: paddle, ball, trail, brick; see
:mod:`tdhook_rl.envs.minatar`) and is packaged as TorchRL's
:class:`~torchrl.modules.ActorValueOperator`:

* the trunk, one 3x3 convolution with 16 channels and a 128-unit layer (the network of the
  MinAtar paper), writes ``hidden`` (``[128]``);
* the policy, a :class:`~torchrl.modules.ProbabilisticActor`, writes ``logits`` (``[3]``:
  no-op, left, right) and samples ``action`` from a categorical distribution, with its
  ``action_log_prob``;
* the value head writes ``state_value`` (``[1]``, the discounted return, gamma 0.99).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Categorical
from torchrl.data import Categorical as CategoricalSpec
from torchrl.modules import ActorValueOperator, ProbabilisticActor, ValueOperator

from tdhook_rl.agents._board import load_trained

__all__ = ["ACTIONS", "CHECKPOINT", "DEFAULT_CONFIG", "Trunk", "load", "make_agent"]

CHECKPOINT = Path(__file__).with_name("checkpoint.pt")
DEFAULT_CONFIG: dict[str, int] = {"channels": 16, "hidden": 128, "in_channels": 4}
#: the agent's actions (Breakout's minimal action set)
ACTIONS = ("noop", "left", "right")


class Trunk(nn.Module):
    """A 3x3 convolution then a linear layer: ``[..., C, 10, 10]`` -> ``[..., hidden]``."""

    def __init__(self, in_channels: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3)  # (C, 10, 10) -> (channels, 8, 8)
        self.fc = nn.Linear(channels * 8 * 8, hidden)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        batch = observation.shape[:-3]
        # conv2d takes one batch dimension: (*batch, C, 10, 10) -> (B, C, 10, 10)
        x = torch.relu(self.conv(observation.reshape(-1, *observation.shape[-3:])))
        return torch.relu(self.fc(x.flatten(-3))).reshape(*batch, -1)


def make_agent(
    config: dict[str, int] | None = None, device: torch.device | str = "cpu"
) -> ActorValueOperator:
    """Builds an untrained agent.

    Args:
        config: ``in_channels`` (4 for Breakout), ``channels`` (of the convolution) and
            ``hidden`` (the trunk's width); defaults to :data:`DEFAULT_CONFIG`.
        device: where the parameters live.

    Returns:
        an :class:`~torchrl.modules.ActorValueOperator` reading ``observation`` and writing
        ``hidden``, ``logits``, ``action``, ``action_log_prob`` and ``state_value``.

    Examples:
        >>> from tdhook_rl.envs.minatar import MinAtarEnv
        >>> agent = make_agent()
        >>> td = agent(MinAtarEnv(batch_size=[5]).reset())
        >>> td["logits"].shape, td["state_value"].shape, td["action"].shape
        (torch.Size([5, 3]), torch.Size([5, 1]), torch.Size([5]))
    """
    config = {**DEFAULT_CONFIG, **(config or {})}
    hidden = config["hidden"]
    policy = ProbabilisticActor(
        TensorDictModule(nn.Linear(hidden, len(ACTIONS)), ["hidden"], ["logits"]),
        in_keys=["logits"],
        out_keys=["action"],
        spec=CategoricalSpec(len(ACTIONS)),
        distribution_class=Categorical,
        return_log_prob=True,
    )
    return ActorValueOperator(
        TensorDictModule(
            Trunk(config["in_channels"], config["channels"], hidden), ["observation"], ["hidden"]
        ),
        policy,
        ValueOperator(nn.Linear(hidden, 1), in_keys=["hidden"]),
    ).to(device)


def load(device: torch.device | str = "cpu", checkpoint: str | Path | None = None) -> Any:
    """Loads the trained agent (in eval mode) from ``checkpoint.pt``.

    Args:
        device: where to put the parameters.
        checkpoint: another checkpoint written by ``train.py``; the shipped one by default.

    Returns:
        the trained :class:`~torchrl.modules.ActorValueOperator` (see :func:`make_agent`).
        Like every TorchRL actor it plays its most probable action by default; sample under
        ``set_exploration_type(ExplorationType.RANDOM)``.

    Examples:
        >>> import tdhook_rl as thr
        >>> from tdhook_rl.envs.minatar import MinAtarEnv
        >>> from tdhook_rl.targets import Index
        >>> explained = thr.Attributed(
        ...     load(),
        ...     "saliency",
        ...     inputs=["observation"],
        ...     targets={"value": Index("state_value", 0)},
        ... )
        >>> td = explained(MinAtarEnv(batch_size=[8]).reset())
        >>> td["attribution", "value", "observation"].shape
        torch.Size([8, 4, 10, 10])
    """
    return load_trained(
        make_agent,
        CHECKPOINT if checkpoint is None else Path(checkpoint),
        device,
        "`python -m tdhook_rl.agents.breakout.train`.",
    )
