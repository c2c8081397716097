"""Hybrid actions (tensordict's CompositeDistribution: a continuous and a discrete part):
ActionLogProb gives the joint log-probability of the taken action, or one component's."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    TensorDictModule,
    TensorDictSequential,
    set_composite_lp_aggregate,
)
from torch import distributions as d
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.targets import ActionLogProb

OBS, BATCH = 5, 16
MOVE, GRIP = ("action", "move"), ("action", "grip")


class Heads(nn.Module):
    """observation -> a Normal over a 2-d move and a 3-way Categorical grip."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, 2 + 2 + 3))

    def forward(self, observation):
        out = self.net(observation)
        return out[..., :2], nn.functional.softplus(out[..., 2:4]) + 0.1, out[..., 4:]


def hybrid_actor(seed: int = 0) -> TensorDictSequential:
    torch.manual_seed(seed)
    params = [("params", "move", "loc"), ("params", "move", "scale"), ("params", "grip", "logits")]
    sampler = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=[MOVE, GRIP],
        distribution_class=CompositeDistribution,
        distribution_kwargs={
            "distribution_map": {"move": d.Normal, "grip": d.Categorical},
            "name_map": {"move": MOVE, "grip": GRIP},
        },
        return_log_prob=True,
    )
    return TensorDictSequential(TensorDictModule(Heads(), ["observation"], params), sampler)


def log_probs(actor: TensorDictSequential, x: torch.Tensor, move, grip):
    """Each component's log-probability of the taken action, the slow way (torch only)."""
    loc, scale, logits = actor[0].module(x)
    return d.Normal(loc, scale).log_prob(move).sum(-1), d.Categorical(logits=logits).log_prob(grip)


def explain(actor, td, method, targets):
    explained = thr.Attributed(actor, method, inputs=["observation"], targets=targets)
    with set_exploration_type(ExplorationType.RANDOM):
        return explained(td.clone())


def test_joint_and_component_log_probabilities_match_per_sample_autograd():
    with set_composite_lp_aggregate(False):
        actor = hybrid_actor()
        td = TensorDict(observation=torch.randn(BATCH, OBS), batch_size=[BATCH])
        targets = {
            "joint": ActionLogProb(),
            "move": ActionLogProb(MOVE),
            "grip": ActionLogProb(GRIP),
        }
        out = explain(actor, td, Saliency(abs=False), targets)
    move, grip = out[MOVE], out[GRIP]
    for name, pick in (
        ("joint", lambda m, g: m + g),
        ("move", lambda m, g: m),
        ("grip", lambda m, g: g),
    ):
        want = []
        for i in range(BATCH):
            x = td["observation"][i : i + 1].clone().requires_grad_()
            m, g = log_probs(actor, x, move[i : i + 1], grip[i : i + 1])
            want.append(torch.autograd.grad(pick(m, g).sum(), x)[0][0])
        torch.testing.assert_close(out["attribution", name, "observation"], torch.stack(want))
    # the components add up to the joint, and neither alone is the joint
    parts = out["attribution", "move", "observation"] + out["attribution", "grip", "observation"]
    torch.testing.assert_close(parts, out["attribution", "joint", "observation"])
    assert out["attribution", "grip", "observation"].abs().max() > 1e-3


def test_joint_log_probability_ig_matches_captum():
    with set_composite_lp_aggregate(False):
        actor = hybrid_actor(1)
        td = TensorDict(observation=torch.randn(BATCH, OBS), batch_size=[BATCH])
        out = explain(actor, td, IntegratedGradients(n_steps=24), {"joint": ActionLogProb()})
    move, grip = out[MOVE], out[GRIP]

    def joint(x):
        k = x.shape[0] // BATCH
        m, g = log_probs(actor, x, move.repeat(k, 1), grip.repeat(k))
        return m + g

    want = CIntegratedGradients(joint).attribute(td["observation"], n_steps=24)
    torch.testing.assert_close(
        out["attribution", "joint", "observation"], want, atol=1e-5, rtol=1e-4
    )


def test_an_aggregating_composite_gives_the_joint_and_refuses_a_component():
    with set_composite_lp_aggregate(True):
        actor = hybrid_actor(2)
        td = TensorDict(observation=torch.randn(BATCH, OBS), batch_size=[BATCH])
        out = explain(actor, td, Saliency(abs=False), {"joint": ActionLogProb()})
        with pytest.raises(TypeError, match="set_composite_lp_aggregate"):
            explain(actor, td, Saliency(abs=False), {"grip": ActionLogProb(GRIP)})
    # the aggregated log-probability is still the joint one
    x = td["observation"].clone().requires_grad_()
    m, g = log_probs(actor, x, out[MOVE], out[GRIP])
    want = torch.autograd.grad((m + g).sum(), x)[0]
    torch.testing.assert_close(out["attribution", "joint", "observation"], want)
