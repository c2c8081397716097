"""Activation patching (restored fractions) and paired intervention effects."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import check_env_specs

import tdhook_rl as thr
from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.interventions import Ablate
from tdhook_rl.targets import ActionLogProb, Index

from models import OBS, PointMassEnv, actor_critic_mlp, gaussian_actor, shared_trunk_actor_critic


def test_restored_fraction_matches_a_slow_computation():
    module = actor_critic_mlp()
    clean = TensorDict(observation=torch.randn(16, OBS), batch_size=[16])
    corrupted = TensorDict(observation=torch.randn(16, OBS), batch_size=[16])
    sites = ["module.0.module.1", "module.1.module.3"]  # actor hidden, critic hidden
    heads = {"logit0": Index("logits", 0), "value": "state_value"}
    result = thr.activation_patching(module, clean, corrupted, heads, sites)
    c, k = module(clean.clone()), module(corrupted.clone())
    for i, site in enumerate(sites):
        h = thr.get(module, clean, site)
        p = thr.set(module, corrupted, {site: h})
        for j, key in enumerate(["logits", "state_value"]):
            col = 0
            want = (p[key][:, col].mean() - k[key][:, col].mean()) / (
                c[key][:, col].mean() - k[key][:, col].mean()
            )
            torch.testing.assert_close(result.restored[i, j], want)
    # the actor's hidden layer restores the policy fully and the value not at all; vice versa
    torch.testing.assert_close(result.restored[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(result.restored[1], torch.tensor([0.0, 1.0]))
    assert "module.0.module.1" in str(result)


def test_shared_trunk_restores_both_heads_and_default_sites():
    ac = shared_trunk_actor_critic()
    clean = TensorDict(observation=torch.randn(8, OBS), batch_size=[8])
    corrupted = TensorDict(observation=torch.randn(8, OBS), batch_size=[8])
    result = thr.activation_patching(
        ac, clean, corrupted, {"policy": ActionLogProb(), "value": "state_value"}
    )
    trunk = result.sites.index("module.0.module.1")
    torch.testing.assert_close(result.restored[trunk], torch.ones(2))
    with pytest.raises(ValueError, match="clean and corrupted batches differ"):
        thr.activation_patching(ac, clean, corrupted[:4], {"value": "state_value"})


def test_point_mass_env_is_a_valid_torchrl_env():
    check_env_specs(PointMassEnv(batch_size=[3]))


@pytest.mark.parametrize("batched", [False, True], ids=["sequential", "batched"])
def test_paired_effect_is_zero_for_a_no_op_and_matches_separate_runs(batched):
    episodes = 4
    env = PointMassEnv(batch_size=[episodes] if batched else [])
    actor = gaussian_actor(action_dim=1)
    h = "module.0.module.0.1"
    with torch.no_grad():
        actor.module[0].module[0][2].weight[:, 5] = 0.0  # unit 5 of the first hidden layer unused
    none = intervention_effect(env, actor, {h: Ablate(units=[5])}, episodes=episodes, max_steps=30)
    torch.testing.assert_close(none.intervened.returns, none.clean.returns)
    assert none.summary["returns"]["change"] == 0.0
    strong = intervention_effect(env, actor, {h: Ablate()}, episodes=episodes, max_steps=30)
    # the clean half equals an independent rollout from the same seed; ablation changes it
    torch.testing.assert_close(strong.clean.returns, none.clean.returns)
    assert not torch.allclose(strong.intervened.returns, strong.clean.returns)
    s = strong.summary["returns"]
    assert s["low"] <= s["change"] <= s["high"]
    assert torch.all(strong.clean.lengths <= 30)


def test_effect_rejects_a_batch_that_is_not_one_copy_per_episode():
    with pytest.raises(ValueError, match=r"one copy per episode: batch_size \[5\]"):
        intervention_effect(
            PointMassEnv(batch_size=[3]),
            gaussian_actor(action_dim=1),
            {"module.0.module.0.1": Ablate()},
            episodes=5,
        )


def test_patching_a_single_sample_and_default_sites_of_the_shipped_agent():
    """Batch shape (): the means are over no batch (``mean(())`` reduced everything and the
    rows failed); the shipped actor's state-independent scale outputs a tuple, so it is no
    default site (patching it raised)."""
    from tdhook_rl.agents import load
    from tdhook_rl.latent.patching import activation_patching, default_sites

    agent = load("double_pendulum")
    g = torch.Generator().manual_seed(0)
    clean = TensorDict(observation=torch.randn(9, generator=g))
    corrupted = TensorDict(observation=torch.randn(9, generator=g))
    sites = default_sites(agent.actor_critic, clean)
    assert "module.0.module.0.module.1" not in sites  # AddStateIndependentNormalScale
    assert "module.0.module.0.module.0.1" in sites
    result = activation_patching(
        agent.actor_critic, clean, corrupted, {"policy": "loc", "value": "state_value"}
    )
    assert result.sites == sites and result.restored.shape == (len(sites), 2)
    last = sites.index("module.1.module.4")  # the value's output layer carries it all
    assert result.restored[last, 1] == pytest.approx(1.0)
