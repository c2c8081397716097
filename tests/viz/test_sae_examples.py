"""SAE feature examples drawn as pendulum frames and Connect Four boards: the drawn samples are
exactly the dashboard's top indices, drawn from the right rows of the states."""

from __future__ import annotations

import math
import re

import pytest
import torch

from tdhook_rl.concepts import SparseAutoencoder, feature_dashboard
from tdhook_rl.viz import draw_pendulum, pendulum_states, sae_examples
from tdhook_rl.viz.sae_examples import POLE_LENGTH


@pytest.fixture(scope="module")
def dashboard():
    torch.manual_seed(0)
    x = torch.randn(40, 5)
    sae = SparseAutoencoder(5, 12, kind="topk", k=2, seed=0)
    # feature 11 never fires: its encoder column is pushed far negative
    with torch.no_grad():
        sae.b_enc[11] = -1e3
    board = feature_dashboard(sae, x, features=[0, 4, 11], top=4)
    assert bool((board.top_indices[2] == -1).all())  # the case the figure must show
    return sae, x, board


def _titles(fig, rows, cols):
    axes = fig.axes[: rows * cols]
    return [[axes[r * cols + c].get_title() for c in range(cols)] for r in range(rows)]


def _drawn_index(title):
    match = re.match(r"sample (\d+)\nf = ", title)
    return int(match.group(1)) if match else -1


def test_pendulum_frames_are_the_dashboards_top_samples(dashboard):
    sae, x, board = dashboard
    states = torch.rand(40, 3) - 0.5  # (cart, angle 1, angle 2)
    fig = sae_examples(board, states)
    titles = _titles(fig, 3, 4)
    drawn = torch.tensor([[_drawn_index(t) for t in row] for row in titles])
    assert torch.equal(drawn, board.top_indices)
    assert all(t == "(does not fire)" for t in titles[2])
    # independently: the top samples of each feature by a direct topk of the encoded data
    f = sae.encode(x).detach()
    for row, j in enumerate([0, 4]):
        values, index = f[:, j].topk(4)
        assert torch.equal(drawn[row][values > 0], index[values > 0])
        for col, value in enumerate(values[values > 0].tolist()):
            assert titles[row][col].endswith(f"f = {value:.3g}")
    # each frame is drawn from its own row of the states: the poles' end points by hand
    for row in range(2):
        for col in range(4):
            index = int(drawn[row, col])
            if index < 0:
                continue
            ax = fig.axes[row * 4 + col]
            poles = next(line for line in ax.lines if len(line.get_xdata()) == 3)
            c, a1, a2 = states[index].double().tolist()
            tip_x = c + POLE_LENGTH * (math.sin(a1) + math.sin(a1 + a2))
            tip_z = POLE_LENGTH * (math.cos(a1) + math.cos(a1 + a2))
            assert poles.get_xdata()[2] == pytest.approx(tip_x)
            assert poles.get_ydata()[2] == pytest.approx(tip_z)


def test_connect_four_boards_are_the_dashboards_top_samples(dashboard):
    _, _, board = dashboard
    g = torch.Generator().manual_seed(1)
    boards = torch.randint(-1, 2, (40, 6, 7), generator=g, dtype=torch.int8)
    fig = sae_examples(board, boards, kind="connect_four", top=3, labels=["a", "b", "c"])
    titles = _titles(fig, 3, 3)
    drawn = torch.tensor([[_drawn_index(t) for t in row] for row in titles])
    assert torch.equal(drawn, board.top_indices[:, :3])
    for row in range(2):
        for col in range(3):
            ax = fig.axes[row * 3 + col]
            # one disc per occupied cell of the drawn board
            assert len(ax.patches) == int((boards[int(drawn[row, col])] != 0).sum())
    assert fig.axes[0].get_ylabel() == "a"


def test_pendulum_states_match_the_simulators_qpos():
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from tdhook_rl.agents import load

    agent = load("double_pendulum")
    env = agent.make_env(1, seed=3)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(30, agent.actor, break_when_any_done=False)
    env.close()
    got = pendulum_states(rollout["raw_observation"])
    torch.testing.assert_close(got, rollout["qpos"].float(), atol=1e-5, rtol=1e-5)


def test_upright_frame_and_bad_input(dashboard):
    from tdhook_rl.viz._mpl import pyplot

    _fig, ax = pyplot().subplots()
    assert draw_pendulum(ax, [0.2, math.pi / 2, 0.0]) == pytest.approx((0.2 + 1.2, 0.0))
    with pytest.raises(ValueError, match="a pendulum state is"):
        draw_pendulum(ax, [0.0, 0.0])
    _, _, board = dashboard
    with pytest.raises(ValueError, match=r"pendulum states must be \[N, 3\]"):
        sae_examples(board, torch.zeros(40, 9))
    with pytest.raises(ValueError, match="N >= the dashboard's 40 samples"):
        sae_examples(board, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="kind must be one of"):
        sae_examples(board, torch.zeros(40, 3), kind="chess")
    with pytest.raises(ValueError, match=r"top must be in \[1, 4\]"):
        sae_examples(board, torch.zeros(40, 3), top=5)
    with pytest.raises(ValueError, match="raw double-pendulum observations"):
        pendulum_states(torch.zeros(4, 3))
