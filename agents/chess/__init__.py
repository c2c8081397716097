"""A chess agent: a small conv net with a move head and a win/draw/loss head.

Trained by supervised learning on Stockfish's moves and evaluations (``data.py`` generates
and labels the positions, ``train.py`` trains); ``QUALITY.md`` holds its measured agreement
with Stockfish and the calibration of its value head on held-out games. It reads the entries
of :func:`tdhook_rl.envs.chess.make_chess_env` and acts over ChessEnv's SAN actions.

Examples:
    >>> from tdhook_rl.agents import chess
    >>> agent = chess.load()
    >>> sorted(agent.out_keys)[:3]
    ['action', 'action_log_prob', 'hidden']
"""

from tdhook_rl.agents.chess.model import OUTCOMES, load, make_agent

__all__ = ["OUTCOMES", "load", "make_agent"]
