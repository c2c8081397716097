"""MinAtar games (Young & Tian 2019) as a batched TorchRL environment: 10x10 pixel frames.

Each game is MinAtar's own :class:`minatar.Environment` (pure numpy, microseconds a step);
a batch of ``N`` games is one :class:`MinAtarEnv` with ``batch_size=[N]`` that steps them in
a loop and stacks their frames, so no worker processes are needed (TorchRL's ``SerialEnv``
over ``batch_size=()`` instances also passes ``check_env_specs``; ``ParallelEnv`` is untested).

Conventions:

* ``observation`` is float32 ``[C, 10, 10]``, channels first (MinAtar's ``state()`` is bool
  ``[10, 10, C]``); Breakout's channels are :data:`BREAKOUT_CHANNELS` (paddle, ball, trail,
  brick).
* ``action`` is ``Categorical`` over the game's *minimal* action set by default (Breakout:
  no-op, left, right); ``minimal_actions=False`` exposes MinAtar's six actions.
* Sticky actions as in MinAtar (``sticky_action_prob`` 0.1 by default: with that probability
  a game repeats its previous action).
* ``reward`` ``[1]`` is MinAtar's (Breakout: +1 a brick); ``terminated`` when the game ends,
  ``truncated`` after ``max_steps`` steps if set.
* Seeding: ``env.set_seed(s)`` seeds game ``i`` of the batch with ``s + i`` (MinAtar's own
  ``Environment.seed``), so game ``i`` replays ``minatar.Environment`` seeded ``s + i`` step
  for step. Unseeded games draw their seeds from torch's global generator.
"""

from __future__ import annotations

import minatar
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

__all__ = ["BREAKOUT_CHANNELS", "MinAtarEnv"]

#: Breakout's observation channels, in order
BREAKOUT_CHANNELS = ("paddle", "ball", "trail", "brick")


class MinAtarEnv(EnvBase):
    """A batch of MinAtar games (Breakout by default) with channels-first float frames.

    Args:
        game: a MinAtar game name (``"breakout"``, ``"asterix"``, ``"freeway"``, ...).
        batch_size: the number of games (``[N]``), or ``()`` for a single game.
        sticky_action_prob: MinAtar's probability of repeating the previous action.
        minimal_actions: actions index the game's minimal action set (else all six).
        max_steps: truncate an episode after this many steps (``None``: never).
        device: where the output tensors live.

    Specs (per game): ``observation`` float ``[C, 10, 10]`` in ``[0, 1]``, ``action``
    ``Categorical(n)``, ``reward`` ``[1]``, ``done``/``terminated``/``truncated`` ``[1]``,
    ``step_count`` int64 ``[1]``.

    Examples:
        >>> env = MinAtarEnv("breakout", batch_size=[4])
        >>> _ = env.set_seed(0)
        >>> rollout = env.rollout(30, break_when_any_done=False)   # random actions
        >>> rollout["observation"].shape, env.action_spec.n
        (torch.Size([4, 30, 4, 10, 10]), 3)
    """

    def __init__(
        self,
        game: str = "breakout",
        batch_size: torch.Size | tuple[int, ...] | list[int] = (),
        sticky_action_prob: float = 0.1,
        minimal_actions: bool = True,
        max_steps: int | None = None,
        device: torch.device | str | None = "cpu",
    ) -> None:
        super().__init__(batch_size=torch.Size(batch_size), device=device)
        if len(self.batch_size) > 1:
            raise ValueError(
                f"MinAtarEnv takes batch_size () or [N], got {list(self.batch_size)}; "
                "wrap it in a SerialEnv/ParallelEnv for more batch dimensions"
            )
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        self.game = game
        self.max_steps = max_steps
        n_games = int(np.prod(self.batch_size)) if len(self.batch_size) else 1
        self._games = [
            minatar.Environment(game, sticky_action_prob=sticky_action_prob) for _ in range(n_games)
        ]
        for g in self._games:
            g.seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        first = self._games[0]
        self.n_channels = int(first.n_channels)
        self._action_map = list(first.minimal_action_set()) if minimal_actions else list(range(6))
        self._steps = np.zeros(n_games, dtype=np.int64)
        shape = self.batch_size
        self.observation_spec = Composite(
            observation=Bounded(0.0, 1.0, (*shape, self.n_channels, 10, 10), device=self.device),
            step_count=Unbounded((*shape, 1), dtype=torch.int64, device=self.device),
            shape=shape,
            device=self.device,
        )
        self.action_spec = Categorical(len(self._action_map), shape, device=self.device)
        self.reward_spec = Unbounded((*shape, 1), device=self.device)
        flag = Categorical(2, (*shape, 1), dtype=torch.bool, device=self.device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )

    @property
    def action_names(self) -> list[str]:
        """The names of the actions (MinAtar's ``n l u r d f`` letters, spelled out)."""
        names = ["noop", "left", "up", "right", "down", "fire"]
        return [names[a] for a in self._action_map]

    def _frames(self) -> torch.Tensor:
        # MinAtar's bool [10, 10, C] per game -> float [N, C, 10, 10]
        states = np.stack([g.state() for g in self._games]).transpose(0, 3, 1, 2)
        return torch.as_tensor(states, dtype=torch.float32, device=self.device).reshape(
            *self.batch_size, self.n_channels, 10, 10
        )

    def _out(self, reward: np.ndarray | None, terminated: np.ndarray) -> TensorDict:
        shape = (*self.batch_size, 1)
        truncated = np.zeros_like(terminated)
        if self.max_steps is not None:
            truncated = (self._steps >= self.max_steps) & ~terminated
        out = TensorDict(
            observation=self._frames(),
            step_count=torch.as_tensor(self._steps.copy(), device=self.device).reshape(shape),
            terminated=torch.as_tensor(terminated, device=self.device).reshape(shape),
            truncated=torch.as_tensor(truncated, device=self.device).reshape(shape),
            done=torch.as_tensor(terminated | truncated, device=self.device).reshape(shape),
            batch_size=self.batch_size,
            device=self.device,
        )
        if reward is not None:
            out["reward"] = torch.as_tensor(
                reward, dtype=torch.float32, device=self.device
            ).reshape(shape)
        return out

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        reset = None if tensordict is None else tensordict.get("_reset", None)
        which = (
            np.ones(len(self._games), dtype=bool)
            if reset is None
            else reset.reshape(-1).cpu().numpy()
        )
        for i in np.flatnonzero(which):
            self._games[i].reset()
            self._steps[i] = 0
        return self._out(None, np.zeros(len(self._games), dtype=bool))

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = tensordict["action"].reshape(-1).cpu().tolist()
        if len(actions) != len(self._games):
            raise ValueError(
                f"expected {len(self._games)} actions (one per game), got {len(actions)}"
            )
        reward = np.zeros(len(self._games), dtype=np.float32)
        terminated = np.zeros(len(self._games), dtype=bool)
        for i, (game, a) in enumerate(zip(self._games, actions, strict=True)):
            reward[i], terminated[i] = game.act(self._action_map[int(a)])
        self._steps += 1
        return self._out(reward, terminated)

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            return
        for i, game in enumerate(self._games):
            game.seed(int(seed) + i)
