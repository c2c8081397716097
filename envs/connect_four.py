"""Connect Four as a batched, pure-torch TorchRL environment.

Thousands of games live in one TensorDict on any device; a step is a handful of tensor ops
over the whole batch (no ``.item()``, no Python loop over games), and four-in-a-row is found
with shifted ANDs of the stone planes.

Board convention: 6 rows by 7 columns, row 0 at the top (so ``plt.imshow`` of an observation
or of an attribution shows the board the usual way up); a stone dropped in a column lands on
the highest-numbered empty row. ``board`` holds ``+1`` for the first player's stones, ``-1``
for the second player's and ``0`` for empty cells.

Two-player convention (one shared policy plays both sides):

* ``player`` is the player to move (``0``: the one who started the game, ``1``: the other).
* ``observation`` is seen from the player to move: plane 0 its own stones, plane 1 the
  opponent's stones, plane 2 all ones when the player to move is the first player (the
  parity of the game, which matters in Connect Four), all zeros otherwise.
* ``("next", "reward")`` goes to the player who just moved (``player`` of the root of the
  transition): ``+1`` when the move completes four in a row, ``0`` otherwise (a draw is
  ``0``). Connect Four is zero-sum, so the opponent's reward for that step is its negative;
  a policy-gradient learner therefore alternates the sign of future rewards
  ("negamax"; see ``tdhook_rl.agents.connect_four.train``).
* A move into a full column ends the game as a loss for the mover (reward ``-1``); policies
  that respect ``action_mask`` never play one.
* ``done``/``terminated`` are set on a win, a full board (draw) or an illegal move;
  ``truncated`` is never set. Finished games are reset the TorchRL way: ``env.reset`` with a
  ``"_reset"`` mask (what ``rollout``, ``step_and_maybe_reset`` and collectors do) clears only
  those games.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite
from torchrl.envs import EnvBase

__all__ = [
    "COLUMNS",
    "ROWS",
    "ConnectFourEnv",
    "four_in_a_row",
    "greedy_action",
    "observation_from_board",
    "random_action",
    "winning_moves",
]

ROWS = 6
COLUMNS = 7


def four_in_a_row(stones: torch.Tensor) -> torch.Tensor:
    """Whether a plane of stones holds four in a row (horizontal, vertical or diagonal).

    Args:
        stones: bool tensor ``[..., 6, 7]`` (``True`` where one player has a stone).

    Returns:
        bool tensor ``[...]``.

    Examples:
        >>> stones = torch.zeros(6, 7, dtype=torch.bool)
        >>> stones[5, 1:5] = True
        >>> four_in_a_row(stones)
        tensor(True)
    """
    s = stones
    horizontal = s[..., :, 0:4] & s[..., :, 1:5] & s[..., :, 2:6] & s[..., :, 3:7]
    vertical = s[..., 0:3, :] & s[..., 1:4, :] & s[..., 2:5, :] & s[..., 3:6, :]
    diagonal = s[..., 0:3, 0:4] & s[..., 1:4, 1:5] & s[..., 2:5, 2:6] & s[..., 3:6, 3:7]
    anti = s[..., 0:3, 3:7] & s[..., 1:4, 2:6] & s[..., 2:5, 1:5] & s[..., 3:6, 0:4]
    return (
        horizontal.flatten(-2).any(-1)
        | vertical.flatten(-2).any(-1)
        | diagonal.flatten(-2).any(-1)
        | anti.flatten(-2).any(-1)
    )


def _stone(player: torch.Tensor) -> torch.Tensor:
    # player [..., 1] in {0, 1} -> stone value [...] in {+1, -1}
    return 1 - 2 * player.squeeze(-1).to(torch.int8)


def _landing_cells(board: torch.Tensor) -> torch.Tensor:
    """One-hot ``[..., 7, 6, 7]``: for each column, the cell a stone dropped there lands on
    (all ``False`` for a full column)."""
    empty = board == 0  # [..., 6, 7]
    # the landing cell of a column is its lowest empty cell: empty, and the cell below is not
    below_filled = torch.ones_like(empty)
    below_filled[..., :-1, :] = ~empty[..., 1:, :]
    landing = empty & below_filled  # [..., 6, 7], at most one per column
    eye = torch.eye(COLUMNS, dtype=torch.bool, device=board.device)  # [col, 7]
    return landing.unsqueeze(-3) & eye.unsqueeze(-2)  # [..., col, 6, 7]


def winning_moves(board: torch.Tensor, stone: torch.Tensor) -> torch.Tensor:
    """The columns where dropping a ``stone`` completes four in a row right away.

    Args:
        board: int tensor ``[..., 6, 7]`` (``+1``, ``-1``, ``0``).
        stone: int tensor ``[...]``, the stone value (``+1`` or ``-1``) of the player.

    Returns:
        bool tensor ``[..., 7]`` (always ``False`` for full columns).

    Examples:
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[5, 0:3] = 1
        >>> winning_moves(board, torch.tensor(1)).nonzero().flatten()
        tensor([3])
    """
    mine = (board == stone[..., None, None]).unsqueeze(-3)  # [..., 1, 6, 7]
    return four_in_a_row(mine | _landing_cells(board))


def random_action(
    action_mask: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniformly random legal column per game.

    Args:
        action_mask: bool ``[..., 7]``, at least one ``True`` per game.
        generator: the random generator (on the mask's device), or the global one.

    Returns:
        int64 ``[...]``.

    Examples:
        >>> mask = torch.tensor([False, False, True, False, False, False, False])
        >>> random_action(mask)
        tensor(2)
    """
    noise = torch.rand(action_mask.shape, generator=generator, device=action_mask.device)
    return noise.masked_fill(~action_mask, -1.0).argmax(-1)


def greedy_action(
    board: torch.Tensor,
    player: torch.Tensor,
    action_mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The one-ply greedy player: wins at once if it can, else blocks an immediate win of the
    opponent, else plays a uniformly random legal column.

    Args:
        board: int ``[..., 6, 7]``; player: int ``[..., 1]``, the player to move;
        action_mask: bool ``[..., 7]``; generator: for the random choices.

    Returns:
        int64 ``[...]``.

    Examples:
        >>> env = ConnectFourEnv()
        >>> td = env.reset()
        >>> for column in [0, 6, 0, 6, 0]:   # the first player threatens column 0
        ...     td = env.step(td.set("action", torch.tensor(column)))["next"]
        >>> greedy_action(td["board"], td["player"], td["action_mask"])  # the second blocks
        tensor(0)
    """
    stone = _stone(player)
    win = winning_moves(board, stone)
    block = winning_moves(board, -stone)
    noise = torch.rand(action_mask.shape, generator=generator, device=action_mask.device)
    score = noise + 2.0 * block + 4.0 * win  # a win beats a block beats a random column
    return score.masked_fill(~action_mask, -1.0).argmax(-1)


def observation_from_board(board: torch.Tensor, player: torch.Tensor) -> torch.Tensor:
    """The float planes ``[..., 3, 6, 7]`` seen by the player to move (see the module doc).

    Args:
        board: int ``[..., 6, 7]``; player: int ``[..., 1]``, the player to move.

    Returns:
        float32 ``[..., 3, 6, 7]``.

    Examples:
        >>> board = torch.zeros(6, 7, dtype=torch.int8)
        >>> board[5, 3] = 1   # the first player opened in the middle; the second is to move
        >>> observation_from_board(board, torch.tensor([1]))[:, 5, 3]
        tensor([0., 1., 0.])
    """
    stone = _stone(player)[..., None, None]
    own = board == stone
    opponent = board == -stone
    first = (player == 0)[..., None].expand_as(own)  # player [..., 1] -> [..., 6, 7]
    return torch.stack([own, opponent, first], dim=-3).to(torch.float32)


class ConnectFourEnv(EnvBase):
    """Connect Four for two players sharing one policy, batched and pure torch.

    See the module documentation for the board, observation and reward conventions.

    Args:
        batch_size: the number of games (``[N]``), or ``()`` for a single game.
        device: where the games live (``"cpu"``, ``"cuda"``, ...).

    Specs (per game): ``observation`` float ``[3, 6, 7]``, ``board`` int8 ``[6, 7]``,
    ``player`` int64 ``[1]``, ``action_mask`` bool ``[7]``, ``action`` int64 ``[]`` (a column,
    ``Categorical(7)``), ``reward`` ``[1]``, ``done``/``terminated``/``truncated`` ``[1]``.

    Examples:
        >>> env = ConnectFourEnv(batch_size=[256])
        >>> _ = env.set_seed(0)
        >>> rollout = env.rollout(50, break_when_any_done=False)   # random legal moves
        >>> rollout["next", "observation"].shape
        torch.Size([256, 50, 3, 6, 7])
        >>> bool(rollout["next", "done"].any())
        True
    """

    def __init__(
        self,
        batch_size: torch.Size | tuple[int, ...] | list[int] = (),
        device: torch.device | str | None = "cpu",
    ) -> None:
        super().__init__(batch_size=torch.Size(batch_size), device=device)
        shape = self.batch_size
        self.observation_spec = Composite(
            observation=Bounded(0.0, 1.0, (*shape, 3, ROWS, COLUMNS), device=self.device),
            board=Bounded(-1, 1, (*shape, ROWS, COLUMNS), dtype=torch.int8, device=self.device),
            player=Categorical(2, (*shape, 1), dtype=torch.int64, device=self.device),
            action_mask=Categorical(2, (*shape, COLUMNS), dtype=torch.bool, device=self.device),
            shape=shape,
            device=self.device,
        )
        self.state_spec = Composite(
            board=self.observation_spec["board"].clone(),
            player=self.observation_spec["player"].clone(),
            shape=shape,
            device=self.device,
        )
        self.action_spec = Categorical(COLUMNS, shape, device=self.device)
        self.reward_spec = Bounded(-1.0, 1.0, (*shape, 1), device=self.device)
        flag = Categorical(2, (*shape, 1), dtype=torch.bool, device=self.device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )
        self._generator: torch.Generator | None = None

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        board = torch.zeros((*self.batch_size, ROWS, COLUMNS), dtype=torch.int8, device=self.device)
        player = torch.zeros((*self.batch_size, 1), dtype=torch.int64, device=self.device)
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is not None and tensordict is not None and "board" in tensordict.keys():
            # keep the games that are not being reset (reset: [..., 1] bool)
            board = torch.where(reset[..., None], board, tensordict["board"])
            player = torch.where(reset, player, tensordict["player"])
        return self._observe(board, player, batch_size=self.batch_size)

    def _observe(self, board: torch.Tensor, player: torch.Tensor, **fields) -> TensorDict:
        return TensorDict(
            observation=observation_from_board(board, player),
            board=board,
            player=player,
            action_mask=board[..., 0, :] == 0,
            **fields,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        board = tensordict["board"]
        player = tensordict["player"]
        action = tensordict["action"].long()
        stone = _stone(player)  # [...]
        # the landing cell of the chosen column; all False when the column is full
        placed = _landing_cells(board).gather(
            -3, action[..., None, None, None].expand(*action.shape, 1, ROWS, COLUMNS)
        )[..., 0, :, :]  # [..., 6, 7]
        legal = placed.flatten(-2).any(-1)  # [...]
        board = torch.where(placed, stone[..., None, None], board)
        win = four_in_a_row(board == stone[..., None, None])
        full = (board[..., 0, :] != 0).all(-1)
        terminated = (win | full | ~legal).unsqueeze(-1)
        reward = (win.to(torch.float32) - (~legal).to(torch.float32)).unsqueeze(-1)
        return self._observe(
            board,
            1 - player,
            reward=reward,
            done=terminated,
            terminated=terminated.clone(),
            truncated=torch.zeros_like(terminated),
            batch_size=self.batch_size,
        )

    @property
    def generator(self) -> torch.Generator | None:
        """The random generator of :meth:`rand_action` (set by ``set_seed``; ``None``: the
        global one)."""
        return self._generator

    def _set_seed(self, seed: int | None) -> None:
        self._generator = torch.Generator(device=self.device)
        if seed is not None:
            self._generator.manual_seed(seed)

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """Writes a uniformly random *legal* column (from ``action_mask``) as the action.

        Args:
            tensordict: holds ``action_mask``; a fresh reset is used when ``None``.

        Returns:
            the tensordict with ``action`` set.
        """
        if tensordict is None:
            tensordict = self.reset()
        action = random_action(tensordict["action_mask"], self._generator)
        return tensordict.set(self.action_key, action)
