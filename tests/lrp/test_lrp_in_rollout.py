"""LRP inside env.rollout (the shipped double-pendulum agent in its MuJoCo env) and on the
batch shapes (), (B,), (T, B), against zennit 0.5.1 on the same observations."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type
from zennit_loader import load_zennit

import tdhook_rl as thr
from tdhook_rl.attribution.lrp import LRP, EpsilonPlus
from tdhook_rl.targets import ActionLogProb

from models import OBS, gaussian_actor

zennit = load_zennit()


def _zennit(net, x, column):
    onehot = torch.zeros(net(x).shape)
    onehot[..., column] = 1.0
    with zennit.attribution.Gradient(net, zennit.composites.EpsilonPlus()) as attributor:
        _, relevance = attributor(x, attr_output=lambda out: out * onehot)
    return relevance


def test_shipped_agent_in_a_rollout():
    from tdhook_rl.agents.double_pendulum import load

    agent = load()
    targets = {"policy": ActionLogProb(), "loc": ("loc", 0), "value": ("state_value", 0)}
    explained = thr.Attributed(
        agent.actor_critic, LRP(EpsilonPlus()), inputs=["observation"], targets=targets
    )
    rollouts = []
    for policy in (agent.actor_critic, explained):
        env = agent.make_env(seed=0)
        try:  # deterministic, under inference_mode: as TorchRL's evaluators run a policy
            with set_exploration_type(ExplorationType.DETERMINISTIC), torch.inference_mode():
                rollouts.append(env.rollout(20, policy, break_when_any_done=False))
        finally:
            env.close()
    plain, rollout = rollouts
    assert torch.equal(plain["action"], rollout["action"])  # the policy acts as before
    obs = rollout["observation"].clone()
    for name in targets:
        relevance = rollout["attribution", name, "observation"]
        assert relevance.shape == obs.shape and not relevance.requires_grad
        assert relevance.abs().sum() > 0
    head = agent.actor.module[0].module[0]  # the MLP before AddStateIndependentNormalScale
    torch.testing.assert_close(
        rollout["attribution", "loc", "observation"], _zennit(head, obs, 0), rtol=1e-4, atol=1e-6
    )
    critic = agent.critic.module
    torch.testing.assert_close(
        rollout["attribution", "value", "observation"],
        _zennit(critic, obs, 0),
        rtol=1e-4,
        atol=1e-6,
    )


def test_batch_shapes(batch_shape):
    actor = gaussian_actor()
    targets = {"loc0": ("loc", 0), "loc1": ("loc", 1), "policy": ActionLogProb()}
    explained = thr.Attributed(actor, LRP(EpsilonPlus()), inputs=["observation"], targets=targets)
    obs = torch.randn(*batch_shape, OBS)
    out = explained(TensorDict(observation=obs, batch_size=batch_shape))
    mlp = actor.module[0].module[0]
    flat = obs.reshape(-1, OBS)
    for column in (0, 1):
        relevance = out["attribution", f"loc{column}", "observation"]
        assert relevance.shape == obs.shape
        torch.testing.assert_close(
            relevance.reshape(-1, OBS), _zennit(mlp, flat, column), rtol=1e-4, atol=1e-6
        )
    assert out["attribution", "policy", "completeness_delta"].shape == batch_shape
