"""The shipped PPO agent for InvertedDoublePendulum-v5: loading, quality, attribution."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictSequential
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ProbabilisticActor, ValueOperator

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.agents.double_pendulum import DoublePendulumAgent, load
from tdhook_rl.agents.double_pendulum.evaluate import episode_returns
from tdhook_rl.agents.double_pendulum.model import CHECKPOINT
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.targets import ActionLogProb

# A balancing step earns ~9.3; a random policy falls within ~10 steps (return ~50-100).
QUICK_STEPS = 300
QUICK_MIN_RETURN = 2_500  # both quick episodes must balance for ~270 of 300 steps


@pytest.fixture(scope="module")
def agent() -> DoublePendulumAgent:
    return load()


def test_checkpoint_is_small_and_loads_by_name(agent):
    assert CHECKPOINT.stat().st_size < 1_000_000
    assert "double_pendulum" in agents.available()
    by_name = agents.load("double_pendulum")
    assert isinstance(by_name, DoublePendulumAgent)
    assert isinstance(agent.actor, ProbabilisticActor)
    assert isinstance(agent.critic, ValueOperator)
    assert isinstance(agent.actor_critic, TensorDictSequential)
    for key in ("loc", "scale"):
        assert agent.obs_norm[key].shape == (9,)
    torch.testing.assert_close(
        by_name.actor_critic.state_dict(), agent.actor_critic.state_dict(), rtol=0, atol=0
    )


def test_quick_evaluation_balances(agent):
    returns, lengths = episode_returns(
        agent.actor, agent.obs_norm, num_episodes=2, seed=123, max_steps=QUICK_STEPS
    )
    assert (returns > QUICK_MIN_RETURN).all(), returns
    assert (lengths == QUICK_STEPS).all(), lengths


def test_sampling_agent_balances_and_random_policy_falls(agent):
    returns, _ = episode_returns(
        agent.actor, agent.obs_norm, num_episodes=2, max_steps=QUICK_STEPS, deterministic=False
    )
    env = agent.make_env(2, seed=0)
    torch.manual_seed(0)
    random_run = env.rollout(QUICK_STEPS, break_when_any_done=False)
    done = random_run["next", "done"].squeeze(-1).long()
    first = (done.cumsum(-1) - done) == 0
    random_returns = (random_run["next", "reward"].squeeze(-1) * first).sum(-1)
    assert (random_returns < 500).all(), random_returns
    # the agent also balances when it samples its actions
    assert (returns > QUICK_MIN_RETURN).all(), returns


@pytest.mark.parametrize("num_envs", [1, 2])
def test_attributed_agent_in_rollout(agent, num_envs):
    steps = 12
    explained = thr.Attributed(
        agent.actor_critic,
        IntegratedGradients(n_steps=8),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "value": "state_value"},
    )
    env = agent.make_env(num_envs, seed=0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        plain = env.rollout(steps, agent.actor_critic)
        env.set_seed(0)
        rollout = env.rollout(steps, explained)
    shape = (steps, 9) if num_envs == 1 else (num_envs, steps, 9)
    assert torch.equal(plain["action"], rollout["action"])
    for head in ("policy", "value"):
        attribution = rollout["attribution", head, "observation"]
        assert attribution.shape == shape
        assert attribution.isfinite().all()
        assert not attribution.requires_grad
        delta = rollout["attribution", head, "completeness_delta"]
        assert delta.shape == shape[:-1]
    # the agent reads the standardized observation; the simulator state rides along
    assert rollout["qpos"].shape == (*shape[:-1], 3)
