"""Sites in the wrappers: what a recording of an intervened site holds, sites by type, one
naming scheme across Recorded / Intervened / patching, and errors caught at construction."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

import tdhook_rl as thr
from tdhook_rl.core.sites import ModuleSite, of_type
from tdhook_rl.interventions import Ablate, Patch, Steer

from models import OBS, actor_critic_mlp, shared_trunk_actor_critic

H1 = "module.0.module.1"  # the actor's first Tanh


def obs_td(n: int = 6) -> TensorDict:
    return TensorDict(observation=torch.randn(n, OBS), batch_size=[n])


def hand_h1(module, obs: torch.Tensor) -> torch.Tensor:
    return torch.tanh(module[0].module[0](obs))


@pytest.mark.parametrize("outside", ["recorded", "intervened"])
def test_recording_an_intervened_site_gives_the_value_the_network_used(outside):
    module = actor_critic_mlp()
    td = obs_td()
    ablate = {H1: Ablate(units=[1, 4])}
    if outside == "recorded":
        wrapper = thr.Recorded(
            thr.Intervened(module, ablate), {"h1": H1, "h2": "module.0.module.3"}
        )
    else:
        wrapper = thr.Intervened(
            thr.Recorded(module, {"h1": H1, "h2": "module.0.module.3"}), ablate
        )
    out = wrapper(td.clone())
    want = hand_h1(module, td["observation"])
    want[:, [1, 4]] = 0.0
    torch.testing.assert_close(out["activations", "h1"], want)
    net = module[0].module
    torch.testing.assert_close(out["activations", "h2"], torch.tanh(net[2](want)))
    got = thr.get(thr.Intervened(module, ablate), td, H1)
    torch.testing.assert_close(got, want)


def test_recording_an_intervened_input_site_and_key_site():
    module = shared_trunk_actor_critic()
    td = obs_td()
    steer = Steer(torch.ones(32), scale=0.5)
    site = ModuleSite("module.2.module", io="input")  # the value head's Linear
    out = thr.Recorded(thr.Intervened(module, {site: steer}), [site])(td.clone())
    torch.testing.assert_close(out["activations", "module.2.module:input"], out["hidden"] + 0.5)
    keyed = thr.Intervened(thr.Recorded(module, ["hidden"]), {"hidden": steer})(td.clone())
    trunk = module[0](td.clone())["hidden"]
    torch.testing.assert_close(keyed["activations", "hidden"], trunk + 0.5)


def test_sites_by_type_in_recorded_intervened_and_patching():
    module = actor_critic_mlp()
    td = obs_td()
    net = module[1].module  # the critic
    recorded = thr.Recorded(module, {"critic": of_type(nn.Tanh, under="module.1")})
    assert list(recorded.sites) == ["critic/module.1.module.1", "critic/module.1.module.3"]
    out = recorded(td.clone())
    h1 = torch.tanh(net[0](td["observation"]))
    torch.testing.assert_close(out["activations", "critic/module.1.module.1"], h1)
    torch.testing.assert_close(
        out["activations", "critic/module.1.module.3"], torch.tanh(net[2](h1))
    )
    # Intervened: the intervention at every matched site (each critic Tanh clamped to zero)
    zeroed = thr.Intervened(module, {of_type(nn.Tanh, under="module.1"): Ablate()})(td.clone())
    torch.testing.assert_close(zeroed["state_value"], net[4].bias.expand(6, 1))
    assert torch.equal(zeroed["logits"], module(td.clone())["logits"])
    got = thr.get(module, td, of_type(nn.Tanh, under="module.0"))
    assert list(got) == ["module.0.module.1", "module.0.module.3"]
    clean = obs_td(8)
    result = thr.activation_patching(
        module,
        clean,
        clean.apply(torch.neg),
        heads={"value": "state_value"},
        sites=[of_type(nn.Tanh, under="module.1")],
    )
    assert result.sites == ["module.1.module.1", "module.1.module.3"]
    torch.testing.assert_close(result.restored[:, 0], torch.ones(2))


def test_names_agree_so_a_recorded_run_patches_by_default_key():
    """Recorded and Intervened name an input site the same way, so Patch(recorded) finds it."""
    module = actor_critic_mlp()
    site = ModuleSite("module.1.module.2", io="input")
    clean, corrupted = obs_td(), obs_td()
    recorded = thr.Recorded(module, [site])(clean.clone())
    patched = thr.Intervened(module, {site: Patch(recorded)})(corrupted.clone())
    torch.testing.assert_close(patched["state_value"], module(clean.clone())["state_value"])


def test_out_key_colliding_with_a_module_key_is_refused_when_built():
    module = actor_critic_mlp()
    for key, how in (
        ("observation", "reads"),
        ("logits", "writes"),
        (("state_value", "x"), "writes"),
    ):
        with pytest.raises(
            ValueError, match=rf"out_key .* collides with the key .* the module {how}"
        ):
            thr.Recorded(module, [H1], out_key=key)
    inner = thr.Recorded(module, {"a": H1})
    thr.Recorded(
        inner, {"b": "module.0.module.3"}
    )  # sharing the root with another Recorded is fine
    with pytest.raises(ValueError, match="collides"):
        thr.Recorded(
            thr.Recorded(module, {"a": H1}, out_key="acts"), {"b": H1}, out_key=("acts", "a", "z")
        )


def test_ablate_dim_out_of_range_names_the_site():
    module = actor_critic_mlp()
    for ablate in (Ablate(units=[0], dim=2), Ablate(dim=-3)):
        with pytest.raises(IndexError, match=r"site 'module.0.module.1': dim -?\d is out of range"):
            thr.Intervened(module, {H1: ablate})(obs_td())


def test_setting_a_submodule_on_a_wrapper_is_refused_and_the_module_untouched():
    module = actor_critic_mlp()
    before = dict(module.named_modules())
    for wrapper in (thr.Recorded(module, [H1]), thr.Intervened(module, {H1: Ablate()})):
        with pytest.raises(AttributeError, match=r"cannot set submodule 'extra'.*your module"):
            wrapper.extra = nn.Linear(2, 2)
        with pytest.raises(AttributeError, match="cannot set submodule"):
            wrapper.add_module("extra", nn.Linear(2, 2))
        with pytest.raises(AttributeError, match="cannot set parameter"):
            wrapper.scale = nn.Parameter(torch.ones(1))
        with pytest.raises(AttributeError, match="cannot set buffer"):
            wrapper.register_buffer("offset", torch.zeros(1))
        with pytest.raises(AttributeError, match="belongs to the wrapped module"):
            del wrapper.module
        wrapper.note = "plain attributes are the wrapper's own"
        assert not hasattr(module, "note")
    assert dict(module.named_modules()) == before
    # weight sync through the wrapper still works
    wrapper = thr.Recorded(module, [H1])
    params = TensorDict.from_module(wrapper).apply(torch.zeros_like)
    params.to_module(wrapper)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in module.parameters())
