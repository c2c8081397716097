"""The actor-critic networks the attribution benchmarks explain.

An :class:`ActorCritic` is a TensorDict module (``observation`` -> ``hidden`` -> ``logits``
and ``state_value``) built from plain ``nn.Linear`` layers, plus a tensor view of the same
modules, :meth:`ActorCritic.stacked`, returning ``cat(logits, state_value)`` for the
tensor-based contestants (captum, the hand-written floor). Both views share one set of
weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn


@dataclass
class ActorCritic:
    """An actor-critic with a shared trunk and two heads, in both TensorDict and tensor form."""

    td_module: TensorDictSequential
    trunk: nn.Module
    policy: nn.Linear
    value: nn.Linear
    obs_shape: tuple[int, ...]

    @property
    def n_logits(self) -> int:
        return self.policy.out_features

    def stacked(self, observation: torch.Tensor) -> torch.Tensor:
        """(N, *obs) -> (N, n_logits + 1): the logits, then the state value."""
        hidden = self.trunk(observation)
        return torch.cat([self.policy(hidden), self.value(hidden)], dim=-1)

    def target_name(self, column: int) -> str:
        """Name of a column of :meth:`stacked`: ``logit_i`` or ``value``."""
        return "value" if column == self.n_logits else f"logit_{column}"


def actor_critic(
    obs_shape: tuple[int, ...] = (9,),
    n_logits: int = 16,
    hidden: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ActorCritic:
    """A seeded actor-critic: [flatten ->] Linear-Tanh-Linear-Tanh trunk, logits and value heads.

    Args:
        obs_shape: shape of one observation; more than one dim is flattened by the trunk
            (e.g. an 8x8x12 board).
        n_logits: width of the policy head.
        hidden: width of the two trunk layers.
        seed: seed of the weight initialisation.
        device: where the weights live.

    Returns:
        The network as :class:`ActorCritic`.

    Examples:
        >>> net = actor_critic()
        >>> from tensordict import TensorDict
        >>> out = net.td_module(TensorDict(observation=torch.zeros(4, 9), batch_size=[4]))
        >>> out["logits"].shape, out["state_value"].shape
        (torch.Size([4, 16]), torch.Size([4, 1]))
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        if len(obs_shape) > 1:
            layers.append(nn.Flatten(start_dim=-len(obs_shape)))
        layers += [
            nn.Linear(math.prod(obs_shape), hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
        ]
        trunk = nn.Sequential(*layers).to(device)
        policy = nn.Linear(hidden, n_logits).to(device)
        value = nn.Linear(hidden, 1).to(device)
    finally:
        torch.random.set_rng_state(generator_state)
    td_module = TensorDictSequential(
        TensorDictModule(trunk, in_keys=["observation"], out_keys=["hidden"]),
        TensorDictModule(policy, in_keys=["hidden"], out_keys=["logits"]),
        TensorDictModule(value, in_keys=["hidden"], out_keys=["state_value"]),
    )
    return ActorCritic(td_module, trunk, policy, value, obs_shape)


def observations(
    batch: int, obs_shape: tuple[int, ...], seed: int = 1, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A seeded batch of standard-normal observations, (batch, *obs_shape)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *obs_shape, generator=generator).to(device)
