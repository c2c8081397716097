"""The PPO actor-critic for ``InvertedDoublePendulum-v5``: network builders and the loader.

The shipped agent has separate actor and critic networks, each a 9 -> 64 -> 64 MLP with Tanh
activations over the standardized ``"observation"``:

- actor: ``loc`` of a TanhNormal over the cart force in ``[-1, 1]`` with a learned,
  state-independent ``scale`` floored at ``config["min_scale"]`` (0.1), a
  ``ProbabilisticActor`` writing ``"action"`` and ``"action_log_prob"``; its deterministic
  action is ``tanh(loc)``;
- critic: a ``ValueOperator`` writing ``"state_value"`` (in units of the training reward,
  which is the environment's reward times ``config["reward_scale"]``).

Module paths inside ``agent.actor_critic`` (for recording by ``named_modules()`` path): the
actor's Linear layers are ``module.0.module.0.module.0.{0,2,4}`` and its hidden Tanh layers
``module.0.module.0.module.0.{1,3}``; the critic's are ``module.1.module.{0,2,4}`` and
``module.1.module.{1,3}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tensordict.nn import (
    AddStateIndependentNormalScale,
    TensorDictModule,
    TensorDictSequential,
)
from torch import nn
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv
from torchrl.modules import ActorValueOperator, ProbabilisticActor, TanhNormal, ValueOperator

from tdhook_rl.agents._checkpoint import read_checkpoint
from tdhook_rl.envs.double_pendulum import FEATURE_NAMES, make_double_pendulum

__all__ = [
    "CHECKPOINT",
    "DoublePendulumAgent",
    "build_actor",
    "build_agent",
    "build_critic",
    "build_shared_actor_critic",
    "load",
]

CHECKPOINT = Path(__file__).with_name("checkpoint.pt")
OBS_DIM = len(FEATURE_NAMES)
ACTION_DIM = 1


def _mlp(sizes: Sequence[int], *, out_gain: float) -> nn.Sequential:
    """Linear/Tanh stack; orthogonal init (gain sqrt 2 inside, ``out_gain`` on the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(n_in, n_out)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, out_gain if last else 2**0.5)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _action_spec(device: torch.device | str) -> Bounded:
    return Bounded(-1.0, 1.0, shape=(ACTION_DIM,), device=device)


def _probabilistic_actor(
    head: nn.Module,
    in_key: str,
    device: torch.device | str,
    init_log_std: float,
    min_scale: float,
) -> ProbabilisticActor:
    scale = AddStateIndependentNormalScale(ACTION_DIM, scale_lb=min_scale, init_value=init_log_std)
    net = nn.Sequential(head, scale)
    return ProbabilisticActor(
        TensorDictModule(net, in_keys=[in_key], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=_action_spec(device),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "tanh_loc": False},
        return_log_prob=True,
    ).to(device)


def build_actor(
    hidden: Sequence[int] = (64, 64),
    *,
    init_log_std: float = 0.0,
    min_scale: float = 1e-4,
    device: torch.device | str = "cpu",
) -> ProbabilisticActor:
    """The policy: an MLP to the TanhNormal's ``loc``, with a state-independent ``scale``.

    Args:
        hidden: widths of the hidden Tanh layers.
        init_log_std: initial log of the scale (before the tanh squashing).
        min_scale: lower bound of the scale (keeps exploring late in training).
        device: device of the parameters.

    Returns:
        A ``ProbabilisticActor`` reading ``"observation"`` and writing ``"loc"``, ``"scale"``,
        ``"action"`` and ``"action_log_prob"``.

    Examples:
        >>> from tensordict import TensorDict
        >>> actor = build_actor()
        >>> actor(TensorDict(observation=torch.zeros(4, 9), batch_size=[4]))["action"].shape
        torch.Size([4, 1])
    """
    head = _mlp([OBS_DIM, *hidden, ACTION_DIM], out_gain=0.01)
    return _probabilistic_actor(head, "observation", device, init_log_std, min_scale)


def build_critic(
    hidden: Sequence[int] = (64, 64), *, device: torch.device | str = "cpu"
) -> ValueOperator:
    """The critic: an MLP from ``"observation"`` to ``"state_value"``.

    Args:
        hidden: widths of the hidden Tanh layers.
        device: device of the parameters.

    Returns:
        A ``ValueOperator`` writing ``"state_value"`` (shape ``(*batch, 1)``).

    Examples:
        >>> from tensordict import TensorDict
        >>> critic = build_critic()
        >>> critic(TensorDict(observation=torch.zeros(4, 9), batch_size=[4]))["state_value"].shape
        torch.Size([4, 1])
    """
    net = _mlp([OBS_DIM, *hidden, 1], out_gain=1.0)
    return ValueOperator(net, in_keys=["observation"]).to(device)


def build_shared_actor_critic(
    hidden: Sequence[int] = (64, 64),
    *,
    init_log_std: float = 0.0,
    min_scale: float = 1e-4,
    device: torch.device | str = "cpu",
) -> ActorValueOperator:
    """A shared-trunk variant: an MLP trunk to ``"hidden"``, then policy and value heads.

    Not the shipped agent (which uses separate networks); ``train.py --arch shared`` trains it.

    Args:
        hidden: widths of the trunk's Tanh layers; the heads are linear.
        init_log_std: initial log of the policy scale.
        min_scale: lower bound of the policy scale.
        device: device of the parameters.

    Returns:
        An ``ActorValueOperator``; ``get_policy_operator()`` and ``get_value_operator()`` give
        the two halves sharing the trunk.

    Examples:
        >>> from tensordict import TensorDict
        >>> avo = build_shared_actor_critic()
        >>> td = avo(TensorDict(observation=torch.zeros(4, 9), batch_size=[4]))
        >>> td["hidden"].shape, td["state_value"].shape
        (torch.Size([4, 64]), torch.Size([4, 1]))
    """
    trunk_net = _mlp([OBS_DIM, *hidden], out_gain=2**0.5)
    trunk = TensorDictModule(
        nn.Sequential(*trunk_net, nn.Tanh()), in_keys=["observation"], out_keys=["hidden"]
    )
    policy = _probabilistic_actor(
        _mlp([hidden[-1], ACTION_DIM], out_gain=0.01), "hidden", device, init_log_std, min_scale
    )
    value = ValueOperator(_mlp([hidden[-1], 1], out_gain=1.0), in_keys=["hidden"])
    return ActorValueOperator(trunk, policy, value).to(device)


@dataclass
class DoublePendulumAgent:
    """A trained actor-critic with the observation statistics it was trained with.

    Attributes:
        actor: the policy (``ProbabilisticActor``); acts deterministically (``tanh(loc)``)
            under ``set_exploration_type(ExplorationType.DETERMINISTIC)``.
        critic: the value network (``ValueOperator``).
        obs_norm: ``{"loc", "scale", "clip"}`` for :func:`make_double_pendulum`.
        config: the training configuration (architecture, hyper-parameters, seed).
        metrics: what training measured (frames, wall time, evaluation returns).
        actor_critic: ``TensorDictSequential(actor, critic)``, one module for both heads,
            sharing the parameters of ``actor`` and ``critic``.
    """

    actor: ProbabilisticActor
    critic: ValueOperator
    obs_norm: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    actor_critic: TensorDictSequential = field(init=False)

    def __post_init__(self) -> None:
        self.actor_critic = TensorDictSequential(self.actor, self.critic)

    def make_env(self, num_envs: int = 1, **kwargs: Any) -> TransformedEnv:
        """The environment with this agent's observation standardization.

        Args:
            num_envs: number of copies (see :func:`make_double_pendulum`).
            **kwargs: forwarded to :func:`make_double_pendulum` (``seed``, ``device``, ...).

        Returns:
            A ``TransformedEnv`` whose ``"observation"`` is what the agent was trained on.
        """
        return make_double_pendulum(num_envs, obs_norm=self.obs_norm, **kwargs)


def build_agent(
    config: Mapping[str, Any], obs_norm: Mapping[str, Any], device: torch.device | str = "cpu"
) -> DoublePendulumAgent:
    """An untrained agent of the architecture that ``config`` describes.

    Args:
        config: a training configuration; reads ``"hidden"``, ``"init_log_std"`` and
            ``"min_scale"``.
        obs_norm: the observation statistics to attach (``{"loc", "scale", "clip"}``).
        device: device of the parameters.

    Returns:
        A :class:`DoublePendulumAgent` with freshly initialized networks.

    Examples:
        >>> norm = {"loc": torch.zeros(9), "scale": torch.ones(9)}
        >>> agent = build_agent({"hidden": [32, 32]}, norm)
        >>> agent.critic.module[0]
        Linear(in_features=9, out_features=32, bias=True)
    """
    hidden = tuple(config.get("hidden", (64, 64)))
    actor = build_actor(
        hidden,
        init_log_std=float(config.get("init_log_std", 0.0)),
        min_scale=float(config.get("min_scale", 1e-4)),
        device=device,
    )
    critic = build_critic(hidden, device=device)
    return DoublePendulumAgent(actor, critic, dict(obs_norm), dict(config))


def load(
    device: torch.device | str = "cpu", checkpoint: str | Path | None = None
) -> DoublePendulumAgent:
    """Loads the trained PPO agent (separate 2x64 Tanh actor and critic).

    Args:
        device: device of the parameters and of the observation statistics.
        checkpoint: a checkpoint written by ``train.py``; by default the shipped one.

    Returns:
        A :class:`DoublePendulumAgent`; build its environment with ``agent.make_env()``.

    Examples:
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> agent = load()
        >>> env = agent.make_env(seed=0)
        >>> with set_exploration_type(ExplorationType.DETERMINISTIC):
        ...     td = env.rollout(100, agent.actor)
        >>> td.shape   # still balancing after 100 steps
        torch.Size([100])
    """
    path = Path(checkpoint) if checkpoint is not None else CHECKPOINT
    state = read_checkpoint(path, device, "`python -m tdhook_rl.agents.double_pendulum.train`.")
    config = state["config"]
    if config.get("arch", "separate") != "separate":
        raise ValueError(
            f"{path} holds a {config['arch']!r} agent; load() builds the 'separate' one"
        )
    obs_norm = {k: v.to(device) if torch.is_tensor(v) else v for k, v in state["obs_norm"].items()}
    agent = build_agent(config, obs_norm, device)
    agent.actor.load_state_dict(state["actor"])
    agent.critic.load_state_dict(state["critic"])
    agent.metrics = dict(state.get("metrics", {}))
    agent.actor.eval()
    agent.critic.eval()
    return agent
