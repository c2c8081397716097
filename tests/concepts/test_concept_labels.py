"""Concept labellers against hand-computed positions and trajectories."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from tdhook_rl.concepts.labels import chess as cl
from tdhook_rl.concepts.labels import (
    chess_concepts,
    connect_four_concepts,
    double_pendulum_energy,
    future,
    immediate_wins,
    open_threes,
    pendulum_concepts,
    steps_until,
    time_to_fall,
)

START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"


# ---------------------------------------------------------------- chess


@pytest.mark.parametrize(
    ("fen", "expected"),
    [
        ("4k3/8/8/8/8/8/8/Q3K3 w - - 0 1", 9),
        ("4k3/8/8/8/8/8/8/Q3K3 b - - 0 1", -9),
        ("r3k3/8/8/8/8/8/PPP5/4K3 w - - 0 1", -2),  # 3 pawns against a rook
        (START, 0),
    ],
)
def test_material_balance(fen, expected):
    assert cl.material_balance(fen) == expected


def test_check_and_mates():
    assert cl.in_check("4k3/8/8/8/8/8/8/4K2r w - - 0 1")
    assert not cl.in_check(START)
    back_rank = "6k1/5ppp/8/8/8/8/8/R5K1"
    assert cl.mate_in_one(back_rank + " w - - 0 1")  # Ra8#
    assert not cl.mate_in_one(back_rank + " b - - 0 1")
    assert cl.mate_threat(back_rank + " b - - 0 1")  # if black passes, Ra8#
    assert not cl.mate_threat(back_rank + " w - - 0 1")
    assert not cl.mate_in_one(START) and not cl.mate_threat(START)
    # the back-rank mate is off once black has an escape square
    assert not cl.mate_in_one("6k1/5pp1/7p/8/8/8/8/R5K1 w - - 0 1")


def test_hanging_pieces():
    loose = "4k3/8/8/3n4/8/8/8/3RK3 w - - 0 1"  # Rd1 attacks the undefended Nd5
    assert cl.hanging_pieces(loose, own=False) == 1
    assert cl.hanging_pieces(loose, own=True) == 0  # Rd1 is not attacked
    assert cl.hanging_pieces("4k3/8/4p3/3n4/8/8/8/3RK3 w - - 0 1", own=False) == 0  # e6 defends
    # from black's side the knight is its own hanging piece
    assert cl.hanging_pieces("4k3/8/8/3n4/8/8/8/3RK3 b - - 0 1", own=True) == 1


def test_mobility_and_king_danger():
    assert cl.mobility(START) == 20 and cl.mobility(START, own=False) == 20
    assert cl.mobility("7k/8/8/8/8/8/8/K7 w - - 0 1") == 3  # a corner king
    checked = "4k3/8/8/8/8/8/8/4K2r w - - 0 1"
    # Rh1 attacks f1 and e1 of the white king's zone (d1 hides behind the king)
    assert cl.king_danger(checked) == 2
    assert cl.king_danger(checked, own=False) == 0
    assert cl.king_danger(START) == 0


def test_passed_pawns():
    assert cl.passed_pawns("4k3/8/8/3P4/8/8/8/4K3 w - - 0 1") == 1
    blocked = "4k3/8/2p5/3P4/8/8/8/4K3 w - - 0 1"  # c6 guards d5's path and d5 guards c6's
    assert cl.passed_pawns(blocked) == 0 and cl.passed_pawns(blocked, own=False) == 0
    apart = "4k3/8/p7/3P4/8/8/8/4K3 w - - 0 1"
    assert cl.passed_pawns(apart) == 1 and cl.passed_pawns(apart, own=False) == 1
    assert cl.passed_pawns(START) == 0


def test_chess_concepts_table():
    out = chess_concepts([START, "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"])
    assert out["mate_in_one"].tolist() == [False, True]
    assert out["mate_in_one"].dtype == torch.bool and out["mobility"].dtype == torch.float32
    assert out["material_balance"].tolist() == [0.0, 2.0]  # rook against three pawns
    with pytest.raises(KeyError, match="unknown chess concepts"):
        chess_concepts([START], ["tempo"])
    with pytest.raises(ValueError, match="is not a FEN"):
        chess_concepts(["not a fen"])


# ---------------------------------------------------------------- connect four


def _slow_threes(board, stone):
    lines = []
    for r in range(6):
        for c in range(7):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                cells = [(r + i * dr, c + i * dc) for i in range(4)]
                if all(0 <= rr < 6 and 0 <= cc < 7 for rr, cc in cells):
                    lines.append([int(board[rr, cc]) for rr, cc in cells])
    assert len(lines) == 69
    return sum(line.count(stone) == 3 and line.count(0) == 1 for line in lines)


def test_connect_four_hand_positions():
    board = torch.zeros(6, 7, dtype=torch.int8)
    board[5, 0:3] = 1  # three in the bottom row, a3 empty
    board[5, 4] = -1
    board[4, 3] = 0
    c = connect_four_concepts(board, 1)
    assert c["own_open_threes"].item() == 1 and c["their_open_threes"].item() == 0
    assert bool(c["win_available"]) and not bool(c["loss_threatened"])
    assert immediate_wins(board, 1).nonzero().flatten().tolist() == [3]
    # the same board, second player to move: it must block column 3
    c = connect_four_concepts(board, -1)
    assert bool(c["loss_threatened"]) and not bool(c["win_available"])
    board[5, 3] = 1  # the centre column: one first-player stone
    board[4, 3] = -1
    board[3, 3] = -1
    assert connect_four_concepts(board, 1)["centre_control"].item() == -1
    assert connect_four_concepts(board, -1)["centre_control"].item() == 1
    # a three whose fourth cell is taken is not open
    full = torch.zeros(6, 7, dtype=torch.int8)
    full[5, 0:3], full[5, 3] = 1, -1
    assert open_threes(full, 1).item() == 0


def test_connect_four_against_slow_and_env():
    from tdhook_rl.envs.connect_four import four_in_a_row, winning_moves

    g = torch.Generator().manual_seed(0)
    boards = torch.zeros(64, 6, 7, dtype=torch.int8)
    for b in range(64):  # random legal-looking boards: drop stones column by column
        for _ in range(int(torch.randint(4, 30, (1,), generator=g))):
            col = int(torch.randint(0, 7, (1,), generator=g))
            empty = (boards[b, :, col] == 0).nonzero().flatten()
            if len(empty):
                boards[b, int(empty.max()), col] = 1 if torch.rand(1, generator=g) < 0.5 else -1
    stone = torch.where(torch.rand(64, generator=g) < 0.5, 1, -1).to(torch.int8)
    got = open_threes(boards, stone)
    assert got.tolist() == [_slow_threes(boards[i], int(stone[i])) for i in range(64)]
    # games in progress only: the env's helper reads an existing four as a win everywhere
    live = ~(four_in_a_row(boards == 1) | four_in_a_row(boards == -1))
    assert live.sum() >= 16
    wins = immediate_wins(boards[live], stone[live])
    assert torch.equal(wins, winning_moves(boards[live], stone[live]))
    assert got.sum() > 0 and immediate_wins(boards, stone).any()  # the test can fail
    with pytest.raises(ValueError, match=r"\[..., 6, 7\]"):
        open_threes(torch.zeros(7, 6), 1)


# ---------------------------------------------------------------- future labels


def _rollout(x, done, truncated=None):
    td = TensorDict({("next", "x"): x, ("next", "done"): done}, batch_size=done.shape[:-1])
    if truncated is not None:
        td["next", "truncated"] = truncated
    return td


def test_future_respects_episode_ends():
    x = torch.arange(6.0).unsqueeze(-1)  # x of the next state of steps 0..5
    done = torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.bool).unsqueeze(-1)
    values, valid = future(_rollout(x, done), "x", 2)
    assert valid.tolist() == [True, True, False, True, True, False]
    assert values.squeeze(-1).tolist() == [1.0, 2.0, 0.0, 4.0, 5.0, 0.0]
    values, valid = future(_rollout(x, done), "x", 1)
    assert valid.all() and torch.equal(values, x)
    trunc = torch.tensor([0, 0, 0, 0, 1, 0], dtype=torch.bool).unsqueeze(-1)
    _, valid = future(_rollout(x, torch.zeros_like(done), trunc), "x", 3)
    assert valid.tolist() == [True, True, True, False, False, False]
    with pytest.raises(ValueError, match="int >= 1"):
        future(_rollout(x, done), "x", 0)


def test_future_batched_time_dim():
    # two environment copies, time last; copy 1 ends after step 0
    x = torch.arange(8.0).reshape(2, 4, 1)
    done = torch.zeros(2, 4, 1, dtype=torch.bool)
    done[1, 0] = True
    values, valid = future(_rollout(x, done), "x", 2)
    assert valid.tolist() == [[True, True, True, False], [False, True, True, False]]
    assert values[0, :3, 0].tolist() == [1.0, 2.0, 3.0] and values[1, 1:3, 0].tolist() == [6, 7]
    # time-major [T, B] named "time" gives the same labels, transposed
    td = _rollout(x.transpose(0, 1), done.transpose(0, 1))
    td.refine_names("time", None)
    values_t, valid_t = future(td, "x", 2)
    assert torch.equal(valid_t, valid.T) and torch.equal(values_t, values.transpose(0, 1))


def test_steps_until_and_horizon():
    done = torch.tensor([0, 0, 1, 0, 0, 0, 0], dtype=torch.bool).unsqueeze(-1)
    td = _rollout(torch.zeros(7, 1), done)
    event = torch.tensor([False, False, True, False, True, False, False])
    steps, valid = steps_until(td, event)
    assert valid.tolist() == [True, True, True, True, True, False, False]
    assert steps[:5].tolist() == [3.0, 2.0, 1.0, 2.0, 1.0] and steps[5:].isnan().all()
    steps, valid = steps_until(td, event, horizon=2)
    # step 0: no event within 2 steps and its episode lasts 2 more steps -> capped at 2
    # step 5: the data ends after 2 steps without the event -> capped; step 6: unknown
    assert steps[:6].tolist() == [2.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    assert valid.tolist() == [True] * 6 + [False]


# ---------------------------------------------------------------- pendulum


def test_pendulum_energy_by_hand():
    from tdhook_rl.concepts.labels.pendulum import double_pendulum_model

    model = double_pendulum_model()
    m_cart, m1, m2 = (float(model.body(name).mass[0]) for name in ("cart", "pole", "pole2"))
    g = 9.81
    upright = double_pendulum_energy(torch.zeros(3), torch.zeros(3))
    # poles 0.6 m each, centres of mass at their middles: 0.3 and 0.9 m above the rail
    assert upright.item() == pytest.approx(g * (0.3 * m1 + 0.9 * m2), rel=1e-4)
    down = double_pendulum_energy(torch.tensor([0.0, math.pi, 0.0]), torch.zeros(3))
    assert down.item() == pytest.approx(-g * (0.3 * m1 + 0.9 * m2), rel=1e-4)
    v = 2.0
    sliding = double_pendulum_energy(torch.zeros(3), torch.tensor([v, 0.0, 0.0]))
    kinetic = 0.5 * (m_cart + m1 + m2) * v**2
    assert (sliding - upright).item() == pytest.approx(kinetic, rel=1e-4)
    batch = double_pendulum_energy(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3))
    assert batch.shape == (2, 5)
    with pytest.raises(ValueError, match=r"\[..., 3\]"):
        double_pendulum_energy(torch.zeros(4), torch.zeros(4))


def test_time_to_fall_and_concepts():
    tip = torch.tensor([1.15, 1.1, 0.95, 1.2, 1.18, 1.1]).unsqueeze(-1)
    done = torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.bool).unsqueeze(-1)
    trunc = torch.tensor([0, 0, 0, 0, 0, 1], dtype=torch.bool).unsqueeze(-1)
    td = TensorDict(
        {
            "qpos": torch.zeros(6, 3),
            "qvel": torch.zeros(6, 3),
            "tip_height": tip,
            ("next", "tip_height"): tip,
            ("next", "done"): done | trunc,
            ("next", "truncated"): trunc,
        },
        [6],
    )
    steps, valid = time_to_fall(td)
    assert steps[:3].tolist() == [3.0, 2.0, 1.0]
    assert valid.tolist() == [True, True, True, False, False, False]  # truncated: censored
    c = pendulum_concepts(td, horizon=2)
    assert c["time_to_fall"].tolist()[:5] == [2.0, 2.0, 1.0, 2.0, 2.0]
    assert c["time_to_fall_valid"].tolist() == [True] * 5 + [False]
    assert c["energy"].shape == (6,) and c["tip_height"][2].item() == pytest.approx(0.95)
