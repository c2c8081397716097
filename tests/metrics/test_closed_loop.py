"""Closed-loop deletion against a slow loop that builds one environment per k and ordering."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from tdhook_rl.metrics import (
    MaskedInput,
    closed_loop_deletion,
    first_episode_returns,
    mean_abs_attribution,
)

from models import OBS, PointMassEnv

EPISODES = 3


class FixedStarts(PointMassEnv):
    """PointMassEnv whose copy i starts at ``linspace(-1.5, 1.5, EPISODES)[i % EPISODES]``:
    the same starts in a big batched env and in a small one."""

    def _starts(self):
        n = self.batch_size.numel()
        starts = torch.linspace(-1.5, 1.5, EPISODES).repeat(n // EPISODES + 1)[:n]
        return starts.reshape(*self.batch_size, 1)


def policy():
    torch.manual_seed(0)
    lin = torch.nn.Linear(OBS, 1)
    with torch.no_grad():
        lin.weight[:, :2] = torch.tensor([-2.0, -1.0])  # pushes toward 0 from x and v
    return TensorDictModule(torch.nn.Sequential(lin, torch.nn.Tanh()), ["observation"], ["action"])


def make(n):
    return FixedStarts(batch_size=(n,))


def slow(net, order_ranks, k, steps):
    env = make(EPISODES)
    mask = (order_ranks < k).expand(EPISODES, OBS)
    td = env.reset()
    total = torch.zeros(EPISODES)
    alive = torch.ones(EPISODES, dtype=torch.bool)
    for _ in range(steps):
        seen = td.clone()
        seen["observation"] = torch.where(mask, 0.0, td["observation"])
        td["action"] = net(seen)["action"]
        td = env.step(td)
        total += torch.where(alive, td["next", "reward"][:, 0], 0.0)
        alive &= ~td["next", "done"][:, 0]
        td = env.step_mdp(td)
        if (~alive).any():  # partial resets keep the other copies going
            td = env.reset(td.set("_reset", (~alive)[:, None]))
            td.exclude("_reset", inplace=True)
    return total


def test_closed_loop_matches_a_slow_per_k_loop():
    net = policy()
    scores = torch.arange(OBS, 0, -1).float()  # feature 0 (x) first, then v, ...
    ks = [0, 1, 2, 5]
    result = closed_loop_deletion(
        make, net, scores, ks=ks, episodes=EPISODES, max_steps=30, n_random=2, seed=4
    )
    assert result.orderings.shape == (3, OBS)
    assert result.orderings[0].tolist() == list(range(OBS))
    for i, k in enumerate(ks):
        expected = slow(net, result.orderings[0], k, 30)
        torch.testing.assert_close(result.episode_returns[i], expected)
        for r in range(2):
            chance = slow(net, result.orderings[1 + r], k, 30)
            torch.testing.assert_close(result.random_episode_returns[i, r], chance)
    torch.testing.assert_close(result.returns, result.episode_returns.mean(-1))
    torch.testing.assert_close(result.random, result.random_episode_returns.mean((1, 2)))
    # masking x (the feature the controller needs) costs return; padding features cost none
    assert result.returns[1] < result.returns[0]
    gen = torch.Generator().manual_seed(4)
    expected_random = torch.rand((2, OBS), generator=gen).argsort(-1)
    assert torch.equal(result.orderings[1:], expected_random)


def test_masked_input_leaves_the_observation_and_the_policy_outputs():
    net = policy()
    mask = torch.zeros(OBS, dtype=torch.bool)
    mask[0] = True
    td = TensorDict(observation=torch.ones(4, OBS), batch_size=[4])
    out = MaskedInput(net, "observation", mask)(td.clone())
    assert torch.equal(out["observation"], td["observation"])
    zeroed = td["observation"].clone()
    zeroed[:, 0] = 0
    torch.testing.assert_close(
        out["action"], net(TensorDict(observation=zeroed, batch_size=[4]))["action"]
    )
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        MaskedInput(net, "observation", mask.float())


def test_first_episode_returns_and_mean_abs_attribution():
    done = torch.tensor([[False, True, True], [False, False, False]])[..., None]
    td = TensorDict(
        {("next", "reward"): torch.ones(2, 3, 1), ("next", "done"): done}, batch_size=[2, 3]
    )
    assert first_episode_returns(td).tolist() == [2.0, 3.0]
    attr = torch.tensor([[[1.0, -1.0]], [[3.0, 5.0]]])
    valid = torch.tensor([[True], [False]])
    rollout = TensorDict(
        {("attribution", "p", "obs"): attr, ("attribution", "p", "valid"): valid}, batch_size=[2, 1]
    )
    assert mean_abs_attribution(rollout, "p", "obs").tolist() == [1.0, 1.0]
    with pytest.raises(KeyError, match="no attribution of head 'q'"):
        mean_abs_attribution(rollout, "q", "obs")


def test_bad_inputs():
    net = policy()
    scores = torch.ones(OBS)
    with pytest.raises(ValueError, match="needs a batched environment"):
        closed_loop_deletion(lambda n: FixedStarts(), net, scores, ks=[0], episodes=2)
    with pytest.raises(ValueError, match="k=10 is out of range"):
        closed_loop_deletion(make, net, scores, ks=[10], episodes=2)
    with pytest.raises(ValueError, match="scores have 3 entries"):
        closed_loop_deletion(make, net, torch.ones(3), ks=[0], episodes=2, n_random=0)
    with pytest.raises(ValueError, match="non-finite"):
        closed_loop_deletion(make, net, torch.full((OBS,), float("nan")), ks=[0])
