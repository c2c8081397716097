"""A MinAtar Breakout agent: a small conv actor-critic on 10x10 pixel frames.

Trained by PPO with TorchRL's collector, replay buffer and ``ClipPPOLoss`` on the batched
:class:`~tdhook_rl.envs.minatar.MinAtarEnv` (``train.py``); ``QUALITY.md`` holds its
measured score against random play.

Examples:
    >>> from tdhook_rl.agents import breakout
    >>> agent = breakout.load()
    >>> sorted(agent.out_keys)[:3]
    ['action', 'action_log_prob', 'hidden']
"""

from tdhook_rl.agents.breakout.model import ACTIONS, load, make_agent

__all__ = ["ACTIONS", "load", "make_agent"]
