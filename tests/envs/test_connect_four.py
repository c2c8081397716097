"""ConnectFourEnv: specs, rules against a slow reference, masks, draws, partial resets."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from tdhook_rl.envs.connect_four import (
    COLUMNS,
    ROWS,
    ConnectFourEnv,
    four_in_a_row,
    greedy_action,
    random_action,
    winning_moves,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DIRECTIONS = {"horizontal": (0, 1), "vertical": (1, 0), "diagonal": (1, 1), "anti": (1, -1)}
# a 42-ply game that fills the board without four in a row (found by a search, then checked)
DRAW = [1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 3, 2, 3, 2, 3, 2, 2, 3, 2, 3]
DRAW += [2, 3, 5, 4, 5, 4, 5, 4, 4, 6, 4, 6, 4, 6, 6, 5, 6, 5, 6, 5]


def reference_four(plane: list[list[bool]]) -> bool:
    """Four in a row the obvious way: every cell, every direction, four steps."""
    for r in range(ROWS):
        for c in range(COLUMNS):
            for dr, dc in DIRECTIONS.values():
                cells = [(r + k * dr, c + k * dc) for k in range(4)]
                if all(0 <= i < ROWS and 0 <= j < COLUMNS and plane[i][j] for i, j in cells):
                    return True
    return False


def reference_winning_moves(board: list[list[int]], stone: int) -> list[bool]:
    out = []
    for c in range(COLUMNS):
        empty = [r for r in range(ROWS) if board[r][c] == 0]
        if not empty:
            out.append(False)
            continue
        plane = [[v == stone for v in row] for row in board]
        plane[max(empty)][c] = True  # the stone falls to the lowest empty row
        out.append(reference_four(plane))
    return out


def play(env: ConnectFourEnv, columns: list[int]):
    """Plays ``columns`` in a single (unbatched) game; returns the last transition."""
    td = env.reset()
    for column in columns:
        step = env.step(td.set("action", torch.tensor(column, device=env.device)))
        td = step["next"]
    return step


@pytest.mark.parametrize("batch_size", [(), (8,), (2, 3)], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_check_env_specs(batch_size, device):
    env = ConnectFourEnv(batch_size=batch_size, device=device)
    check_env_specs(env, seed=0, break_when_any_done="both")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_every_line_of_each_direction_is_a_win(direction):
    dr, dc = DIRECTIONS[direction]
    planes, expected = [], []
    for r in range(ROWS):
        for c in range(COLUMNS):
            cells = [(r + k * dr, c + k * dc) for k in range(4)]
            plane = torch.zeros(ROWS, COLUMNS, dtype=torch.bool)
            if all(0 <= i < ROWS and 0 <= j < COLUMNS for i, j in cells):
                for i, j in cells:
                    plane[i, j] = True
                planes.append(plane)
                expected.append(True)
                planes.append(plane.clone())  # the same line, one stone short
                planes[-1][cells[1]] = False
                expected.append(False)
    assert four_in_a_row(torch.stack(planes)).tolist() == expected


@pytest.mark.parametrize("density", [0.3, 0.45, 0.6])
def test_four_in_a_row_matches_reference_on_random_planes(density):
    planes = torch.rand(400, ROWS, COLUMNS, generator=torch.Generator().manual_seed(0)) < density
    expected = [reference_four(p.tolist()) for p in planes]
    assert 0 < sum(expected) < len(expected)  # both outcomes are exercised
    assert four_in_a_row(planes).tolist() == expected


def test_rewards_and_winning_moves_match_reference_in_random_games():
    env = ConnectFourEnv(batch_size=[16])
    env.set_seed(1)
    rollout = env.rollout(50, break_when_any_done=False)  # random legal moves, auto-reset
    boards, after = rollout["board"], rollout["next", "board"]
    stones = 1 - 2 * rollout["player"].squeeze(-1)  # the mover's stone
    wins = rollout["next", "reward"].squeeze(-1) > 0
    legal = rollout["action_mask"]
    moves = winning_moves(boards, stones)
    for g in range(boards.shape[0]):
        for t in range(boards.shape[1]):
            board, stone = boards[g, t].tolist(), int(stones[g, t])
            column = int(rollout["action"][g, t])
            expected = [row[:] for row in board]  # the stone falls to the lowest empty row
            expected[max(r for r in range(ROWS) if board[r][column] == 0)][column] = stone
            assert after[g, t].tolist() == expected
            assert bool(wins[g, t]) == reference_four(
                [[v == stone for v in row] for row in after[g, t].tolist()]
            )
            assert moves[g, t].tolist() == reference_winning_moves(board, stone)
            assert legal[g, t].tolist() == [board[0][c] == 0 for c in range(COLUMNS)]
    assert wins.any()


def test_gravity_observation_and_players():
    env = ConnectFourEnv()
    td = play(env, [3, 3])["next"]
    assert td["board"][5, 3] == 1 and td["board"][4, 3] == -1  # row 0 is the top
    assert td["player"].item() == 0
    obs = td["observation"]  # the first player is to move again
    assert obs[0, 5, 3] == 1 and obs[1, 4, 3] == 1 and obs[2].eq(1).all()
    assert obs[:2].sum() == 2


def test_full_column_is_masked_and_playing_it_loses():
    env = ConnectFourEnv()
    step = play(env, [0] * 6)
    assert not step["next", "done"].item()
    assert step["next", "action_mask"].tolist() == [False] + [True] * 6
    step = env.step(step["next"].set("action", torch.tensor(0)))
    assert step["next", "done"].item() and step["next", "reward"].item() == -1.0
    assert step["next", "board"].eq(step["board"]).all()  # nothing was placed


def test_full_board_is_a_draw():
    env = ConnectFourEnv()
    step = play(env, DRAW[:-1])
    assert not step["next", "done"].item()
    assert step["next", "action_mask"].sum() == 1
    step = play(env, DRAW)
    assert step["next", "done"].item() and step["next", "terminated"].item()
    assert step["next", "reward"].item() == 0.0
    assert not step["next", "action_mask"].any()
    assert step["next", "board"].ne(0).all() and step["next", "board"].sum() == 0


def test_win_ends_the_game_with_reward_to_the_mover():
    env = ConnectFourEnv()
    step = play(env, [0, 1, 0, 1, 0, 1, 0])  # the first player stacks four in column 0
    assert step["player"].item() == 0 and step["next", "reward"].item() == 1.0
    assert step["next", "done"].item() and not step["next", "truncated"].item()


@pytest.mark.parametrize("device", DEVICES)
def test_reset_only_finished_games(device):
    env = ConnectFourEnv(batch_size=[6], device=device)
    td = env.reset()
    # games 0 and 3 win on the 7th ply, the others go on
    win, other = [0, 1, 0, 1, 0, 1, 0], [2, 2, 3, 3, 2, 2, 3]
    plan = torch.tensor([win, other, other, win, other, other], device=device)
    for ply in range(7):
        td["action"] = plan[:, ply]
        step, td = env.step_and_maybe_reset(td)
    finished = step["next", "done"].squeeze(-1)
    assert finished.tolist() == [True, False, False, True, False, False]
    assert td["board"][finished].eq(0).all() and td["player"][finished].eq(0).all()
    assert td["action_mask"][finished].all() and not td["done"].any()
    unfinished = ~finished
    assert td["board"][unfinished].eq(step["next", "board"][unfinished]).all()
    assert td["player"][unfinished].eq(1).all()
    # the explicit form: reset(td with "_reset") keeps the games that are not reset
    state = step["next"].clone()
    state["_reset"] = finished.unsqueeze(-1)
    reset = env.reset(state)
    assert reset["board"][finished].eq(0).all()
    assert reset["board"][unfinished].eq(step["next", "board"][unfinished]).all()


def test_scripted_players():
    board = torch.zeros(3, ROWS, COLUMNS, dtype=torch.int8)
    board[0, 5, 0:3] = 1  # the first player (to move) can win in column 3
    board[1, 5, 4:7] = -1  # the second player threatens column 3: block it
    board[1, 4, 4:6] = 1
    board[2, :, 1:] = 1  # only column 0 is legal
    player = torch.zeros(3, 1, dtype=torch.int64)
    mask = board[:, 0, :] == 0
    assert greedy_action(board, player, mask).tolist()[:2] == [3, 3]
    assert greedy_action(board, player, mask)[2] == 0 and random_action(mask)[2] == 0
    # a win beats a block
    board[0, 5, 4:7] = -1
    assert greedy_action(board[:1], player[:1], mask[:1]).item() == 3
    counts = torch.bincount(random_action(torch.ones(7000, COLUMNS, dtype=torch.bool)), minlength=7)
    assert (counts - 1000).abs().max() < 150


def test_seeded_rollouts_repeat():
    env = ConnectFourEnv(batch_size=[16])
    env.set_seed(3)
    first = env.rollout(20, break_when_any_done=False)
    env.set_seed(3)
    second = env.rollout(20, break_when_any_done=False)
    assert (first["action"] == second["action"]).all()


def test_rand_action_on_unbatched_reset():
    env = ConnectFourEnv()
    td = env.rand_action()
    assert td["action"].shape == () and 0 <= td["action"] < COLUMNS
    assert isinstance(td, TensorDict)
