"""A Connect Four agent: one network plays both sides, with a move head and a win head.

Trained by self-play PPO on the batched :class:`~tdhook_rl.envs.connect_four.ConnectFourEnv`
(``train.py``); ``QUALITY.md`` holds its measured win rates against scripted players.

Examples:
    >>> from tdhook_rl.agents import connect_four
    >>> agent = connect_four.load()
    >>> sorted(agent.out_keys)[:3]
    ['action', 'action_log_prob', 'hidden']
"""

from tdhook_rl.agents.connect_four.model import OUTCOMES, load, make_agent

__all__ = ["OUTCOMES", "load", "make_agent"]
