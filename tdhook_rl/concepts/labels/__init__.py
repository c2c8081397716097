"""Concept labellers: what a position or a trajectory means, as label columns for probes.

* :mod:`~tdhook_rl.concepts.labels.chess`: chess concepts from python-chess (material,
  check, mate threats, hanging pieces, mobility, king danger, passed pawns);
* :mod:`~tdhook_rl.concepts.labels.connect_four`: open threes, immediate wins and threats,
  centre control;
* :mod:`~tdhook_rl.concepts.labels.pendulum`: the double pendulum's physical state, its total
  energy and the time until its tip falls;
* :mod:`~tdhook_rl.concepts.labels.future`: labels from the future of a rollout
  (``("next", ...)`` ``k`` steps later), never across an episode end.

Examples:
    >>> from tdhook_rl.concepts.labels import chess_concepts
    >>> sorted(chess_concepts(["8/8/8/8/8/8/8/K1k5 w - - 0 1"]))[:2]
    ['in_check', 'king_danger']
"""

from tdhook_rl.concepts.labels.chess import CHESS_CONCEPTS, chess_concepts
from tdhook_rl.concepts.labels.connect_four import (
    CONNECT_FOUR_CONCEPTS,
    connect_four_concepts,
    immediate_wins,
    open_threes,
)
from tdhook_rl.concepts.labels.future import episode_ends, future, steps_until
from tdhook_rl.concepts.labels.pendulum import (
    double_pendulum_energy,
    pendulum_concepts,
    time_to_fall,
)

__all__ = [
    "CHESS_CONCEPTS",
    "CONNECT_FOUR_CONCEPTS",
    "chess_concepts",
    "connect_four_concepts",
    "double_pendulum_energy",
    "episode_ends",
    "future",
    "immediate_wins",
    "open_threes",
    "pendulum_concepts",
    "steps_until",
    "time_to_fall",
]
