"""The metrics on real policy heads: a stochastic policy's taken action stays the target's
reference under every perturbation, context inputs (an action mask) pass through, and the
shipped double-pendulum agent's ``ActionLoc`` and value heads."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Categorical

import tdhook_rl as thr
from tdhook_rl.metrics import deletion_curve, randomization_check, sensitivity_max
from tdhook_rl.targets import ActionLoc, ActionLogProb

from models import N_LOGITS, OBS, categorical_actor


@pytest.mark.parametrize("distribution", ["categorical", "masked"])
def test_the_taken_action_stays_the_reference(distribution):
    actor = categorical_actor(distribution)
    explained = thr.Attributed(
        actor, "saliency", inputs=["observation"], targets={"policy": ActionLogProb()}
    )
    data = TensorDict(observation=torch.randn(16, OBS), batch_size=[16])
    if distribution == "masked":
        data["action_mask"] = torch.ones(16, N_LOGITS, dtype=torch.bool)
    td = explained(data)
    curve = deletion_curve(explained, td, ks=[0, OBS], agreement="logits")
    taken = Categorical(logits=td["logits"]).log_prob(td["action"])
    torch.testing.assert_close(curve.values["policy"][0], taken)
    blank = td.select("action_mask", strict=False).clone()  # the mask, where there is one
    zero = actor(blank.set("observation", torch.zeros(16, OBS)))["logits"]
    torch.testing.assert_close(
        curve.values["policy"][1], Categorical(logits=zero).log_prob(td["action"])
    )
    assert bool((curve.agreement["policy"][0] == 1).all())
    # no perturbation: the same action explained again, the same map
    still = sensitivity_max(explained, td, perturb_radius=0.0, n_perturb_samples=3)
    assert float(still.sensitivity["policy"].max()) == 0.0


def test_shipped_double_pendulum_heads():
    from tdhook_rl import agents

    agent = agents.load("double_pendulum")
    explained = thr.Attributed(
        agent.actor_critic,
        "ig",
        inputs=["observation"],
        targets={"policy": ActionLoc(), "value": "state_value"},
    )
    td = explained(TensorDict(observation=torch.randn(4, 3, 9), batch_size=[4, 3]))
    curve = deletion_curve(explained, td, ks=[0, 9])
    torch.testing.assert_close(curve.values["policy"][0], td["loc"][..., 0])
    torch.testing.assert_close(curve.values["value"][0], td["state_value"][..., 0])
    critic = [p for p in randomization_check(explained, td).layers if p.startswith("module.1")]
    result = randomization_check(explained, td, layers=critic)
    assert torch.allclose(result.correlation["policy"], torch.tensor(1.0))  # actor untouched
    assert float(result.correlation["value"][-1].mean()) < 0.9
