"""Conductance at hidden sites, every target in one pass, against captum's LayerConductance
called once per target; completeness over a layer that every path passes through."""

from __future__ import annotations

import pickle

import pytest
import torch
from captum.attr import LayerConductance
from connect_four_shaped import MOVES, Head, board_actor_critic, boards
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.attribution import Conductance, resolve_method
from tdhook_rl.targets import Index

from models import N_LOGITS, OBS, actor_critic_mlp

ATOL, RTOL = 1e-5, 1e-4
TARGETS = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)}


def captum_conductance(forward, layer, x, n_targets, **kwargs):
    """(n_targets, N, *unit), captum called once per target."""
    explainer = LayerConductance(forward, layer)
    return torch.stack([explainer.attribute(x, target=t, **kwargs) for t in range(n_targets)])


def logits_of(module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return module(TensorDict(observation=x, batch_size=x.shape[:1]))["logits"]

    return forward


@pytest.mark.parametrize("shape", [(), (6,), (3, 4)], ids=str)
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_conductance_matches_captum_on_an_mlp(shape, rule):
    module = actor_critic_mlp()
    site = "module.0.module.1"  # the actor's first Tanh: the path reaches it through a Linear
    x = torch.randn(*shape, OBS, generator=torch.Generator().manual_seed(1))
    baseline = torch.linspace(-0.5, 0.5, OBS)
    method = Conductance(n_steps=12, rule=rule, baseline=baseline)
    out = thr.Attributed(module, method, inputs=[site], targets=TARGETS)(
        TensorDict(observation=x, batch_size=shape)
    )
    flat = x.reshape(-1, OBS)
    expected = captum_conductance(
        logits_of(module),
        module.get_submodule(site),
        flat,
        N_LOGITS,
        baselines=baseline.expand_as(flat),
        n_steps=12,
        method=rule,
    )
    for i, name in enumerate(TARGETS):
        got = out["attribution", name, site]
        assert got.shape == (*shape, 32)
        torch.testing.assert_close(got.reshape(-1, 32), expected[i], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("strategy", ["reverse", "forward", "replicate"])
def test_every_strategy_and_chunking_give_the_same_conductance(strategy):
    module = actor_critic_mlp()
    site = "module.0.module.3"
    td = TensorDict(
        observation=torch.randn(5, OBS, generator=torch.Generator().manual_seed(2)),
        batch_size=[5],
    )
    whole = thr.Attributed(module, Conductance(n_steps=9), inputs=[site], targets=TARGETS)
    chunked = thr.Attributed(
        module,
        Conductance(n_steps=9, chunk_size=4),
        inputs=[site],
        targets=TARGETS,
        strategy=strategy,
    )
    a, b = whole(td.clone()), chunked(td.clone())
    for name in TARGETS:
        torch.testing.assert_close(
            a["attribution", name, site], b["attribution", name, site], atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize(
    ("shape", "site"),
    [
        ((), "module.trunk.conv.1"),  # inside the conv trunk: [8, 6, 7]
        ((4,), "module.trunk.conv.1"),
        ((4,), "module.trunk.conv.2"),  # a Conv2d's output, before its ReLU: [8, 4, 5]
        ((2, 3), "module.trunk"),  # after the trunk restores the batch: [160]
    ],
    ids=str,
)
def test_conductance_matches_captum_on_a_conv_actor_critic(shape, site):
    module = board_actor_critic()
    x = boards(*shape, seed=3)
    targets = {f"move{i}": Index("logits", i) for i in range(MOVES)}
    targets["value"] = "state_value"
    out = thr.Attributed(module, Conductance(n_steps=8), inputs=[site], targets=targets)(
        TensorDict(observation=x, batch_size=shape)
    )
    flat = x.reshape(-1, *x.shape[len(shape) :])
    layer = module.get_submodule(site)
    moves = captum_conductance(Head(module, "logits"), layer, flat, MOVES, n_steps=8)
    value = LayerConductance(Head(module, "state_value"), layer).attribute(flat, n_steps=8)
    for i, name in enumerate(targets):
        got = out["attribution", name, site]
        expected = moves[i] if i < MOVES else value
        assert got.shape == (*shape, *expected.shape[1:])
        assert expected.abs().max() > 1e-4  # a test that can fail
        torch.testing.assert_close(
            got.reshape(expected.shape),
            expected,
            atol=ATOL * expected.abs().max().item(),
            rtol=RTOL,
        )


def test_units_of_a_cut_layer_conduct_the_whole_change():
    """Completeness: every path from the input to the logits passes through the actor's
    first hidden layer, so its units' conductances sum to f(x) - f(b), with an error that
    shrinks as the path is refined (and is not zero at a coarse path: the test can fail)."""
    module = actor_critic_mlp()
    site = "module.0.module.1"
    x = 2 * torch.randn(6, OBS, generator=torch.Generator().manual_seed(4))
    td = TensorDict(observation=x, batch_size=[6])
    change = module(td.clone())["logits"] - module(td.clone().zero_())["logits"]  # (6, 4)
    errors = []
    for n_steps in (8, 256):
        method = Conductance(n_steps=n_steps, rule="riemann_trapezoid")
        out = thr.Attributed(module, method, inputs=[site], targets=TARGETS)(td.clone())
        total = torch.stack([out["attribution", t, site].sum(-1) for t in TARGETS], -1)
        errors.append((total - change).abs().max().item())
    scale = change.abs().max().item()
    assert errors[1] < 2e-3 * scale, errors
    assert errors[0] > 4 * errors[1], errors


def test_completeness_on_the_shipped_connect_four_agent():
    """The trunk's ``hidden`` (a key both heads read) conducts all of every head's change
    from the empty board (the action mask held fixed along the path): exactly for the move
    logit (linear in ``hidden``), up to a quadrature error that shrinks as 1/n_steps for the
    value (an MLP and a softmax after ``hidden``)."""
    from tdhook_rl.agents.connect_four import load
    from tdhook_rl.envs.connect_four import ConnectFourEnv

    agent = load()
    env = ConnectFourEnv(batch_size=[4])
    env.set_seed(0)
    td = env.rollout(5, break_when_any_done=False)[:, -1]["next"]
    td = td.select("observation", "action_mask")
    targets = {"move3": Index("logits", 3), "value": "state_value"}
    empty = td.clone()
    empty["observation"] = torch.zeros_like(td["observation"])
    end, start = agent(td.clone()), agent(empty)
    errors: dict[str, list[float]] = {"move3": [], "value": []}
    for n_steps in (32, 128):
        method = Conductance(n_steps=n_steps, rule="riemann_trapezoid")
        out = thr.Attributed(agent, method, inputs=["hidden"], targets=targets)(td.clone())
        for name, (key, i) in {"move3": ("logits", 3), "value": ("state_value", 0)}.items():
            assert out["attribution", name, "hidden"].shape == (4, 256)
            change = end[key][:, i] - start[key][:, i]
            total = out["attribution", name, "hidden"].sum(-1)
            errors[name].append((total - change).abs().max().item() / change.abs().max().item())
    assert max(errors["move3"]) < 1e-5, errors
    assert errors["value"][1] < 1e-2 and errors["value"][0] > 3 * errors["value"][1], errors


def test_conductance_by_name_and_pickled():
    module = actor_critic_mlp()
    explained = thr.Attributed(module, "conductance", inputs=["module.0.module.3"], targets=TARGETS)
    assert isinstance(resolve_method("conductance"), Conductance)
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    first = explained(td.clone())
    again = pickle.loads(pickle.dumps(explained))(td.clone())  # a collector's worker copy
    torch.testing.assert_close(
        first["attribution", "logit1", "module.0.module.3"],
        again["attribution", "logit1", "module.0.module.3"],
    )
    with pytest.raises(ValueError, match="n_steps must be an integer >= 2"):
        Conductance(n_steps=1)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        Conductance(chunk_size=0)


def test_two_sites_of_one_path_are_each_captums():
    """Both actor layers in one wrapper: each gets captum's conductance for that layer (a
    joint replacement of both would cut the first layer's path through the second)."""
    module = actor_critic_mlp()
    sites = ["module.0.module.1", "module.0.module.3"]
    x = torch.randn(4, OBS, generator=torch.Generator().manual_seed(5))
    out = thr.Attributed(module, Conductance(n_steps=8), inputs=sites, targets=TARGETS)(
        TensorDict(observation=x, batch_size=[4])
    )
    for site in sites:
        expected = captum_conductance(
            logits_of(module), module.get_submodule(site), x, N_LOGITS, n_steps=8
        )
        for i, name in enumerate(TARGETS):
            got = out["attribution", name, site]
            assert got.abs().max() > 1e-3
            torch.testing.assert_close(got, expected[i], atol=ATOL, rtol=RTOL)


def test_conductance_in_a_rollout_leaves_the_actions_alone():
    from models import PointMassEnv, gaussian_actor

    actor = gaussian_actor(action_dim=1)
    site = next(n for n, m in actor.named_modules() if isinstance(m, torch.nn.Tanh))
    explained = thr.Attributed(
        actor, Conductance(n_steps=6), inputs=[site], targets={"loc": thr.targets.ActionLoc()}
    )
    env = PointMassEnv((3,))
    torch.manual_seed(0), env.set_seed(0)
    plain = env.rollout(4, actor)
    torch.manual_seed(0), env.set_seed(0)
    rollout = env.rollout(4, explained)
    torch.testing.assert_close(rollout["action"], plain["action"])
    assert rollout["attribution", "loc", site].shape == (3, 4, 32)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in actor.modules())
