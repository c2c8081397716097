"""A PPO agent for Gymnasium's ``InvertedDoublePendulum-v5`` (MuJoCo), trained with TorchRL.

Separate 2x64 Tanh actor (TanhNormal policy) and critic over standardized observations; the
observation statistics ship with the checkpoint. ``model.py`` builds and loads it,
``train.py`` trains it (seeded), ``evaluate.py`` measures it; ``QUALITY.md`` holds the
measured return.

Examples:
    >>> from tdhook_rl.agents.double_pendulum import load
    >>> agent = load()
    >>> env = agent.make_env(num_envs=2, seed=0)   # the observation standardization applied
    >>> sorted(agent.actor_critic.out_keys)
    ['action', 'action_log_prob', 'loc', 'scale', 'state_value']
"""

from __future__ import annotations

from tdhook_rl.agents.double_pendulum.model import (
    DoublePendulumAgent,
    build_actor,
    build_critic,
    build_shared_actor_critic,
    load,
)

__all__ = [
    "DoublePendulumAgent",
    "build_actor",
    "build_critic",
    "build_shared_actor_critic",
    "load",
]
