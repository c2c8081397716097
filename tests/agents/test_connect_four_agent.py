"""The shipped Connect Four agent: loading, quality, heads, attribution."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ActorValueOperator

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.agents.connect_four import OUTCOMES, load
from tdhook_rl.agents.connect_four.evaluate import evaluate, tactics
from tdhook_rl.agents.connect_four.model import CHECKPOINT
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.envs.connect_four import ConnectFourEnv, winning_moves
from tdhook_rl.targets import ActionLogProb, Index

# QUALITY.md reports 500 games per opponent; these quick checks use 100 seeded games.
QUICK_GAMES = 100
MIN_WIN_VS_RANDOM = 0.9
MIN_WIN_VS_GREEDY = 0.6
# over the agent's moves in the games against the random player
MIN_WINS_TAKEN = 0.8
MIN_BLOCKS_MADE = 0.7


@pytest.fixture(scope="module")
def agent() -> ActorValueOperator:
    return load()


def random_positions(batch: int, plies: int, seed: int = 0):
    """Positions after random legal moves (games restart when they end)."""
    env = ConnectFourEnv(batch_size=[batch])
    env.set_seed(seed)
    return env.rollout(plies, break_when_any_done=False)[:, -1]["next"].exclude(
        "reward", "done", "terminated", "truncated"
    )


def test_checkpoint_is_small_and_loads_by_name(agent):
    assert CHECKPOINT.stat().st_size < 3_000_000
    assert "connect_four" in agents.available()
    by_name = agents.load("connect_four")
    assert isinstance(by_name, ActorValueOperator)
    torch.testing.assert_close(by_name.state_dict(), agent.state_dict(), rtol=0, atol=0)
    assert not agent.training


def test_quick_evaluation_against_random(agent):
    rates = evaluate(agent, "random", games=QUICK_GAMES, seed=1)
    assert rates["win"] >= MIN_WIN_VS_RANDOM, rates


def test_quick_evaluation_against_greedy(agent):
    rates = evaluate(agent, "greedy", games=QUICK_GAMES, seed=1)
    assert rates["win"] >= MIN_WIN_VS_GREEDY, rates


def test_takes_immediate_wins_and_blocks(agent):
    counts = tactics(agent, "random", games=QUICK_GAMES, seed=1)
    assert counts["wins_available"] > 100 and counts["blocks_needed"] > 10, counts
    assert counts["wins_taken"] >= MIN_WINS_TAKEN, counts
    assert counts["blocks_made"] >= MIN_BLOCKS_MADE, counts


def test_heads_and_legal_sampling(agent):
    td = random_positions(256, 20, seed=3)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        out = agent(td.clone())
    assert out["logits"].shape == (256, 7) and out["win_logits"].shape == (256, len(OUTCOMES))
    probs = out["win_logits"].softmax(-1)
    torch.testing.assert_close(out["state_value"], probs[:, :1] - probs[:, 2:])
    assert out["state_value"].abs().le(1).all()
    assert td["action_mask"].gather(-1, out["action"].unsqueeze(-1)).all()


def test_win_head_sees_immediate_wins(agent):
    """Where the player to move can win at once, the win head is confident about it."""
    td = random_positions(512, 9, seed=4)
    stone = 1 - 2 * td["player"].squeeze(-1).to(torch.int8)
    has_win = winning_moves(td["board"], stone).any(-1)
    with torch.no_grad():
        p_win = agent.get_value_operator()(td.clone())["win_logits"].softmax(-1)[:, 0]
    assert p_win[has_win].mean() > p_win[~has_win].mean() + 0.2


@pytest.mark.parametrize(
    "method", ["saliency", IntegratedGradients(n_steps=8)], ids=["saliency", "ig"]
)
def test_attributed_on_a_batch_of_positions(agent, method):
    td = random_positions(16, 7, seed=5)
    explained = thr.Attributed(
        agent,
        method,
        inputs=["observation"],
        targets={"move": ActionLogProb(), "win": Index("win_logits", 0)},
    )
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        plain = agent(td.clone())
        out = explained(td.clone())
    assert torch.equal(plain["action"], out["action"])
    for target in ("move", "win"):
        attribution = out["attribution", target, "observation"]
        assert attribution.shape == (16, 3, 6, 7)
        assert attribution.isfinite().all() and attribution.abs().sum() > 0


def test_attributed_agent_plays_in_a_rollout(agent):
    env = ConnectFourEnv(batch_size=[4])
    explained = thr.Attributed(
        agent,
        "saliency",
        inputs=["observation"],
        targets={"move": ActionLogProb(), "value": "state_value"},
    )
    rollout = env.rollout(10, explained, break_when_any_done=False)
    assert rollout["attribution", "value", "observation"].shape == (4, 10, 3, 6, 7)
    assert rollout["action_mask"].gather(-1, rollout["action"].unsqueeze(-1)).all()
