"""Bad hidden sites, each a clear error that names the site: not reached in the forward
pass, inside a vmap, a non-floating output, a unit out of range, and conductance at a site
that is not between the input and the target. Each beside a good site that works, so that
every check can fail."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import MultiAgentMLP

import tdhook_rl as thr
from tdhook_rl.attribution import Conductance, FeatureAblation, IntegratedGradients, Saliency
from tdhook_rl.targets import Neuron

from models import OBS, actor_critic_mlp

METHODS = [Saliency(abs=False), IntegratedGradients(n_steps=4), Conductance(n_steps=4)]
IDS = ["saliency", "ig", "conductance"]
STRATEGIES = ["reverse", "forward", "replicate"]


class Branchy(nn.Module):
    """A net with a submodule it never runs, one giving integers, one giving booleans, and
    one computed from a constant (not from the observation)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.act = nn.Tanh()
        self.unused = nn.Linear(3, 4)
        self.pick = Argmax()
        self.positive = Positive()
        self.bias = nn.Linear(1, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        h = self.act(self.lin(observation))
        self.pick(h), self.positive(h)  # read by nothing downstream
        constant = self.bias(torch.ones(*observation.shape[:-1], 1))
        return self.out(h + constant)


class Argmax(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.argmax(-1)


class Positive(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h > 0


def branchy() -> TensorDictModule:
    torch.manual_seed(0)
    return TensorDictModule(Branchy(), ["observation"], ["state_value"])


def observations(*shape: int) -> TensorDict:
    g = torch.Generator().manual_seed(0)
    return TensorDict(observation=torch.randn(*shape, 3, generator=g), batch_size=shape)


VALUE = {"value": "state_value"}


@pytest.mark.parametrize("method", [*METHODS, FeatureAblation()], ids=[*IDS, "ablation"])
def test_a_site_not_reached_is_named(method):
    net = branchy()
    good = thr.Attributed(net, method, inputs=["module.act"], targets=VALUE)(observations(4))
    assert good["attribution", "value", "module.act"].shape == (4, 4)
    explained = thr.Attributed(net, method, inputs=["module.unused"], targets=VALUE)
    with pytest.raises(RuntimeError, match=r"hidden site 'module\.unused' was not reached"):
        explained(observations(4))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_neuron_target_at_a_site_not_reached_is_named(strategy):
    net = branchy()
    targets = {"unit": Neuron("module.unused", 0), "value": "state_value"}
    explained = thr.Attributed(
        net, "saliency", inputs=["observation"], targets=targets, strategy=strategy
    )
    with pytest.raises(RuntimeError, match=r"hidden site 'module\.unused' was not reached"):
        explained(observations(4))


@pytest.mark.parametrize("site", ["module.pick", "module.positive"])
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_a_non_floating_site_is_named(site, method):
    explained = thr.Attributed(branchy(), method, inputs=[site], targets=VALUE)
    dtype = "torch.int64" if site == "module.pick" else "torch.bool"
    with pytest.raises(TypeError, match=f"hidden site '{site}' gives a {dtype} tensor"):
        explained(observations(4))
    targets = {"unit": Neuron(site, 0)}
    as_target = thr.Attributed(branchy(), "saliency", inputs=["observation"], targets=targets)
    with pytest.raises(TypeError, match=f"hidden site '{site}' gives a {dtype} tensor"):
        as_target(observations(4))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("unit", [4, -5, (1, 0)], ids=str)
def test_a_unit_out_of_range_is_named(unit, strategy):
    net = branchy()
    targets = {"in": Neuron("module.act", 3), "value": "state_value"}
    thr.Attributed(net, "saliency", inputs=["observation"], targets=targets)(observations(2))
    targets["out"] = Neuron("module.act", unit)
    explained = thr.Attributed(
        net, "saliency", inputs=["observation"], targets=targets, strategy=strategy
    )
    with pytest.raises(IndexError, match=r"target 'out': unit .* out of range for hidden site "):
        explained(observations(2))
    with pytest.raises(IndexError, match=r"'module\.act', whose activation has per-sample shape"):
        explained(observations(2))


def agents_mlp(share_params: bool) -> TensorDictModule:
    torch.manual_seed(0)
    mlp = MultiAgentMLP(
        n_agent_inputs=5,
        n_agent_outputs=2,
        n_agents=3,
        centralized=False,
        share_params=share_params,
        depth=2,
        num_cells=8,
        activation_class=nn.Tanh,
    )
    return TensorDictModule(mlp, ["observation"], ["out"])


AGENT_SITE = "module._empty_net.1"  # the first Tanh of each agent's network
AGENT_TD = TensorDict(observation=torch.randn(4, 3, 5), batch_size=[4])


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_a_site_inside_a_vmap_is_named(method):
    """MultiAgentMLP(share_params=False) runs each agent's network under torch.vmap, where a
    hook sees one slice; with shared parameters the same site is an ordinary one."""
    target = {"o": ("out", (0, 0))}
    shared = thr.Attributed(agents_mlp(True), method, inputs=[AGENT_SITE], targets=target)
    assert shared(AGENT_TD.clone())["attribution", "o", AGENT_SITE].shape == (4, 3, 8)
    explained = thr.Attributed(agents_mlp(False), method, inputs=[AGENT_SITE], targets=target)
    with pytest.raises(ValueError, match=f"hidden site '{AGENT_SITE}' runs inside torch.vmap"):
        explained(AGENT_TD.clone())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_neuron_target_inside_a_vmap_is_named(strategy):
    """Before, a leaked batched tensor gave functorch's internal errors here."""
    targets = {"unit": Neuron(AGENT_SITE, (0, 0)), "o": ("out", (0, 0))}  # agent 0
    shared = thr.Attributed(
        agents_mlp(True), "saliency", inputs=["observation"], targets=targets, strategy=strategy
    )
    assert shared(AGENT_TD.clone())["attribution", "unit", "observation"].shape == (4, 3, 5)
    explained = thr.Attributed(
        agents_mlp(False), "saliency", inputs=["observation"], targets=targets, strategy=strategy
    )
    with pytest.raises(ValueError, match=f"hidden site '{AGENT_SITE}' runs inside torch.vmap"):
        explained(AGENT_TD.clone())


def test_conductance_at_a_site_no_target_path_crosses_is_named():
    """The actor's hidden layer is not between the observation and the critic's value."""
    module = actor_critic_mlp()
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    site = "module.0.module.1"
    ok = thr.Attributed(module, Conductance(n_steps=4), inputs=[site], targets={"l": ("logits", 0)})
    assert ok(td.clone())["attribution", "l", site].shape == (3, 32)
    both = {"l": ("logits", 0), "value": "state_value"}
    explained = thr.Attributed(module, Conductance(n_steps=4), inputs=[site], targets=both)
    with pytest.raises(
        ValueError,
        match=rf"target 'value' does not depend on hidden site '{site}' \(the site is not "
        "between the input and the target\\)",
    ):
        explained(td.clone())


def test_conductance_at_a_site_the_input_does_not_reach_is_named():
    net = branchy()
    explained = thr.Attributed(net, Conductance(n_steps=4), inputs=["module.bias"], targets=VALUE)
    with pytest.raises(
        ValueError, match=r"hidden site 'module.bias' does not depend on the module's inputs"
    ):
        explained(observations(2))
    # the same site is a fine input for layer saliency, whose path does not start at the input
    saliency = thr.Attributed(net, "saliency", inputs=["module.bias"], targets=VALUE)
    assert saliency(observations(2))["attribution", "value", "module.bias"].shape == (2, 4)


def test_conductance_to_an_input_entry_is_refused():
    explained = thr.Attributed(
        branchy(), Conductance(n_steps=4), inputs=["module.act", "observation"], targets=VALUE
    )
    with pytest.raises(ValueError, match="'observation' is an entry the module reads"):
        explained(observations(2))
