"""The shipped Breakout agent: it loads, is small, and beats random play by a margin a random
network does not reach; its training is seeded and reproducible."""

from __future__ import annotations

import pytest
import torch

from tdhook_rl import agents
from tdhook_rl.agents.breakout.evaluate import episode_scores, random_policy
from tdhook_rl.agents.breakout.model import CHECKPOINT, load, make_agent
from tdhook_rl.agents.breakout.train import train

EPISODES, STEPS, BAR = 16, 300, 3.0


def test_listed_and_small():
    assert "breakout" in agents.available()
    assert CHECKPOINT.stat().st_size < 1_000_000
    agent = agents.load("breakout")
    assert not agent.training


def test_beats_random_play_by_a_margin_a_random_network_misses():
    agent = load()
    mine = episode_scores(agent, EPISODES, seed=0, max_steps=STEPS)
    rand = episode_scores(random_policy(seed=0), EPISODES, seed=0, max_steps=STEPS)
    assert mine.mean() >= BAR, mine
    assert mine.mean() >= rand.mean() + 2.0, (mine.mean(), rand.mean())
    torch.manual_seed(0)
    untrained = episode_scores(make_agent().eval(), EPISODES, seed=0, max_steps=STEPS)
    assert untrained.mean() < BAR  # the bar is one an untrained net fails


def test_deterministic_scores():
    agent = load()
    a = episode_scores(agent, 4, seed=5, max_steps=100)
    b = episode_scores(agent, 4, seed=5, max_steps=100)
    assert torch.equal(a, b)


def test_training_is_reproducible(tmp_path):
    kwargs = dict(frames=128, envs=4, horizon=16, minibatch=32, eval_episodes=2, eval_every=0)
    first, _ = train(**kwargs, out=tmp_path / "a")
    second, _ = train(**kwargs, out=tmp_path / "b")
    for (name, p), q in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    third, _ = train(**{**kwargs, "seed": 1}, out=tmp_path / "c")
    assert not torch.equal(
        first.state_dict()["module.0.module.conv.weight"],
        third.state_dict()["module.0.module.conv.weight"],
    )
    loaded = load(checkpoint=tmp_path / "a" / "checkpoint.pt")
    assert set(loaded.state_dict()) == set(first.state_dict())


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"breakout\.train"):
        load(checkpoint=tmp_path / "none.pt")
