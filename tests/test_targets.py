"""Targets: keys, Index, callables, ActionLogProb for every supported distribution, ActionLoc."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.targets import ActionLoc, ActionLogProb, FromCallable, Index, Key, as_target

from models import N_LOGITS, OBS, actor_critic_mlp, categorical_actor, gaussian_actor, mlp


def observation_td(batch, masked=False):
    td = TensorDict(observation=torch.randn(*batch, OBS), batch_size=batch)
    if masked:
        mask = torch.rand(*batch, N_LOGITS) > 0.4
        mask[..., 0] = True
        td["action_mask"] = mask
    return td


ACTORS = {
    "tanh_normal": lambda: gaussian_actor("tanh_normal"),
    "normal": lambda: gaussian_actor("normal"),
    "categorical": lambda: categorical_actor("categorical"),
    "one_hot": lambda: categorical_actor("one_hot"),
    "masked": lambda: categorical_actor("masked"),
}


def slow_log_prob_gradient(actor, td, action):
    """The saliency of log pi(a|x), sample by sample, with autograd on each sample alone."""
    grads = []
    for i in range(td.batch_size[0]):
        x = td["observation"][i].clone().requires_grad_()
        sample = td[i].clone().set("observation", x)
        dist = actor.get_dist(sample)
        lp = dist.log_prob(action[i])
        grads.append(torch.autograd.grad(lp.sum(), x)[0])
    return torch.stack(grads)


@pytest.mark.parametrize("name", list(ACTORS))
def test_action_log_prob_saliency_matches_per_sample_autograd(name):
    actor = ACTORS[name]()
    td = observation_td((6,), masked=name == "masked")
    explained = thr.Attributed(
        actor, Saliency(abs=False), inputs=["observation"], targets={"policy": ActionLogProb()}
    )
    out = explained(td.clone())
    want = slow_log_prob_gradient(actor, td, out["action"])
    torch.testing.assert_close(
        out["attribution", "policy", "observation"], want, atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("name", ["tanh_normal", "masked"])
def test_action_log_prob_ig_matches_captum(name):
    actor = ACTORS[name]()
    td = observation_td((5,), masked=name == "masked")
    explained = thr.Attributed(
        actor,
        IntegratedGradients(n_steps=16),
        inputs=["observation"],
        targets={"policy": ActionLogProb()},
    )
    out = explained(td.clone())
    action = out["action"]

    def log_prob(x):  # captum's forward: log pi(taken action | x), one per sample
        # captum stacks the path points along the batch, step-major: (k * 5, 9)
        k = x.shape[0] // 5
        sample = td.expand(k, 5).reshape(-1).set("observation", x)
        return actor.get_dist(sample).log_prob(action.expand(k, *action.shape).flatten(0, 1))

    want = CIntegratedGradients(log_prob).attribute(td["observation"], n_steps=16)
    torch.testing.assert_close(
        out["attribution", "policy", "observation"], want, atol=1e-5, rtol=1e-4
    )


def test_action_log_prob_needs_a_probabilistic_module():
    with pytest.raises(ValueError, match="ActionLogProb needs a probabilistic actor"):
        thr.Attributed(
            actor_critic_mlp(),
            "saliency",
            inputs=["observation"],
            targets={"policy": ActionLogProb()},
        )


def test_index_and_callable_targets():
    td = TensorDict(logits=torch.arange(12.0).reshape(2, 2, 3), batch_size=[2])
    assert torch.equal(Index("logits", (1, 2))(td, td), torch.tensor([5.0, 11.0]))
    assert torch.equal(Key("logits")(td, td), td["logits"])
    total = FromCallable(lambda t: t["logits"].sum((-1, -2)))
    assert torch.equal(total(td, td), torch.tensor([15.0, 51.0]))
    with pytest.raises(IndexError, match="out of range"):
        Index("logits", 5)(td, td)
    assert isinstance(as_target("state_value"), Key)
    assert isinstance(as_target(("agents", "value")), Key)
    with pytest.raises(TypeError, match="a target must be"):
        as_target(3)


def test_callable_target_inside_attributed_equals_sum_of_index_targets():
    """Attributions are linear in the target: IG(l0 + l1) == IG(l0) + IG(l1)."""
    module = actor_critic_mlp()
    td = observation_td((4,))
    explained = thr.Attributed(
        module,
        IntegratedGradients(n_steps=8),
        inputs=["observation"],
        targets={
            "l0": Index("logits", 0),
            "l1": Index("logits", 1),
            "both": lambda t: t["logits"][..., 0] + t["logits"][..., 1],
        },
    )
    out = explained(td)
    a = out["attribution"]
    torch.testing.assert_close(
        a["both", "observation"],
        a["l0", "observation"] + a["l1", "observation"],
        atol=1e-6,
        rtol=1e-5,
    )


# --- ActionLoc: the location of a continuous action distribution -----------------------------

BATCHES = [(), (5,), (3, 4)]


def constant_scale_actor(action_dim: int = 1):
    """A Normal actor whose scale does not depend on the state (as PPO's learned log-std)."""
    from tensordict.nn import TensorDictSequential
    from torchrl.modules import ProbabilisticActor

    torch.manual_seed(0)
    loc = TensorDictModule(mlp(OBS, action_dim), ["observation"], ["loc"])
    scale = TensorDictModule(lambda x: torch.full_like(x, 0.3), ["loc"], ["scale"])
    return ProbabilisticActor(
        TensorDictSequential(loc, scale),
        in_keys=["loc", "scale"],
        distribution_class=torch.distributions.Normal,
    )


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("distribution", ["tanh_normal", "normal"])
def test_action_loc_ig_matches_captum(batch, distribution):
    actor = gaussian_actor(distribution, action_dim=1)
    td = observation_td(batch)
    explained = thr.Attributed(
        actor, IntegratedGradients(n_steps=16), inputs=["observation"], targets={"f": ActionLoc()}
    )
    got = explained(td.clone())["attribution", "f", "observation"]
    assert got.shape == (*batch, OBS)

    def loc(x):  # captum's forward: the actor's loc entry, one per sample
        return actor(TensorDict(observation=x, batch_size=x.shape[:1]))["loc"][:, 0]

    flat = td["observation"].reshape(-1, OBS)
    want = CIntegratedGradients(loc).attribute(flat, n_steps=16).reshape(*batch, OBS)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_action_loc_index_picks_one_action_dimension_and_is_required_for_several():
    actor = gaussian_actor("tanh_normal", action_dim=2)
    td = observation_td((6,))
    with pytest.raises(
        ValueError, match=r"target 'f'.*per-sample shape \(2,\).*ActionLoc\(index=i\)"
    ):
        thr.Attributed(actor, "saliency", inputs=["observation"], targets={"f": ActionLoc()})(td)
    explained = thr.Attributed(
        actor, Saliency(abs=False), inputs=["observation"], targets={"f": ActionLoc(index=1)}
    )
    got = explained(td.clone())["attribution", "f", "observation"]
    x = td["observation"].clone().requires_grad_()
    loc = actor(TensorDict(observation=x, batch_size=[6]))["loc"][:, 1]
    want = torch.autograd.grad(loc.sum(), x)[0]  # rows are independent samples
    torch.testing.assert_close(got, want)


def test_action_loc_explains_what_the_mode_log_prob_cannot():
    """At the mode, d log pi(mode | x) / dx is zero for a state-independent scale."""
    from tensordict.nn import InteractionType, set_interaction_type

    actor = constant_scale_actor()
    td = observation_td((8,))
    explained = thr.Attributed(
        actor,
        Saliency(abs=False),
        inputs=["observation"],
        targets={"log_prob": ActionLogProb(), "loc": ActionLoc()},
    )
    with set_interaction_type(InteractionType.DETERMINISTIC):
        out = explained(td)["attribution"]
    assert out["log_prob", "observation"].abs().max() < 1e-5
    assert out["loc", "observation"].abs().max() > 1e-2


def test_action_loc_needs_a_probabilistic_actor_or_a_loc_key():
    with pytest.raises(ValueError, match="ActionLoc needs a probabilistic actor"):
        thr.Attributed(
            actor_critic_mlp(), "saliency", inputs=["observation"], targets={"f": ActionLoc()}
        )
    explained = thr.Attributed(  # an explicit key needs no distribution
        actor_critic_mlp(),
        "saliency",
        inputs=["observation"],
        targets={"f": ActionLoc("state_value")},
    )
    assert explained(observation_td((2,)))["attribution", "f", "observation"].shape == (2, OBS)
    assert repr(ActionLoc(index=0)) == "ActionLoc(index=0)"
