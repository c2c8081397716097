"""Interventions: exact effects against slow recomputations, restoration, errors, collectors."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import MultiSyncCollector

import tdhook_rl as thr
from tdhook_rl.interventions import Ablate, Clamp, Patch, Steer, steering_vector

from collector_helpers import shutdown_collector
from models import OBS, actor_critic_mlp, make_double_pendulum, shared_trunk_actor_critic

H1 = "module.0.module.1"  # the actor's first Tanh: module.0.module = Linear, Tanh, Linear, ...


def obs_td(n=6):
    return TensorDict(observation=torch.randn(n, OBS), batch_size=[n])


def actor_from_h1(module, h1):
    net = module[0].module
    return net[4](net[3](net[2](h1)))


def first_hidden(module, obs):
    net = module[0].module
    return torch.tanh(net[0](obs))


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def no_hooks(module):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


@pytest.mark.parametrize(
    ("intervention", "edit"),
    [
        (Ablate(units=[3, 7]), lambda h: h.index_fill(-1, torch.tensor([3, 7]), 0.0)),
        (Ablate(value=0.5), lambda h: torch.full_like(h, 0.5)),
        (
            Clamp(min=-0.1, max=0.2, units=[0]),
            lambda h: torch.cat([h[:, :1].clamp(-0.1, 0.2), h[:, 1:]], 1),
        ),
        (
            Steer(torch.linspace(-1, 1, 32), scale=0.3),
            lambda h: h + 0.3 * torch.linspace(-1, 1, 32),
        ),
        (thr.interventions.FromCallable(lambda a, td: a * td["observation"][:, :1]), None),
    ],
    ids=["ablate-units", "ablate-constant", "clamp", "steer", "callable"],
)
def test_effect_matches_a_slow_recomputation(intervention, edit):
    module = actor_critic_mlp()
    td = obs_td()
    out = thr.Intervened(module, {H1: intervention})(td.clone())
    h1 = first_hidden(module, td["observation"])
    edited = edit(h1) if edit is not None else h1 * td["observation"][:, :1]
    torch.testing.assert_close(out["logits"], actor_from_h1(module, edited))
    critic = actor_critic_mlp()[1](td.clone())
    torch.testing.assert_close(out["state_value"], critic["state_value"])  # other head untouched


def test_mean_ablation_uses_recorded_means():
    module = actor_critic_mlp()
    rollout = thr.Recorded(module, {"h1": H1})(obs_td(50))
    ablate = Ablate.from_mean(rollout["activations", "h1"], units=[2])
    td = obs_td(4)
    out = thr.Intervened(module, {H1: ablate})(td.clone())
    h1 = first_hidden(module, td["observation"])
    h1[:, 2] = rollout["activations", "h1"][:, 2].mean()
    torch.testing.assert_close(out["logits"], actor_from_h1(module, h1))


def test_ablating_an_unused_unit_changes_nothing_and_a_used_one_does():
    module = actor_critic_mlp()
    with torch.no_grad():
        module[0].module[2].weight[:, 5] = 0.0  # unit 5 of H1 feeds nothing
    td = obs_td()
    clean = module(td.clone())
    unused = thr.Intervened(module, {H1: Ablate(units=[5])})(td.clone())
    used = thr.Intervened(module, {H1: Ablate(units=[6])})(td.clone())
    assert torch.equal(unused["logits"], clean["logits"])
    assert not torch.allclose(used["logits"], clean["logits"])


def test_patch_with_the_clean_runs_activations_reproduces_it_exactly():
    module = actor_critic_mlp()
    clean_td, corrupt_td = obs_td(), obs_td()
    clean = thr.Recorded(module, {H1: H1})(clean_td.clone())
    patched = thr.Intervened(module, {H1: Patch(clean)})(corrupt_td.clone())
    # downstream of H1 the actor sees the clean run; the critic still sees the corrupted input
    assert torch.equal(patched["logits"], clean["logits"])
    assert not torch.allclose(patched["state_value"], clean["state_value"])


def test_key_site_and_input_site():
    ac = shared_trunk_actor_critic()
    td = obs_td()
    hidden = torch.zeros(6, 32)
    out = thr.Intervened(ac, {"hidden": Patch(hidden)})(td.clone())
    value_head = ac.get_value_operator()[-1].module
    torch.testing.assert_close(out["state_value"], value_head(hidden))
    # input of the value head's Linear, same effect
    out2 = thr.Intervened(ac, {thr.ModuleSite("module.2.module", io="input"): Patch(hidden)})(
        td.clone()
    )
    torch.testing.assert_close(out2["state_value"], value_head(hidden))


def test_module_restored_after_use_and_after_an_exception():
    module = actor_critic_mlp()
    before, td = snapshot(module), obs_td()
    want = module(td.clone())
    thr.Intervened(module, {H1: Ablate()})(td.clone())
    bad = thr.Intervened(module, {H1: Steer(torch.ones(31))})
    with pytest.raises(ValueError, match=r"site 'module.0.module.1': steering vector has shape"):
        bad(td.clone())
    assert no_hooks(module)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert torch.equal(module(td.clone())["logits"], want["logits"])


def test_context_manager_get_and_set():
    module = actor_critic_mlp()
    td = obs_td()
    h1 = thr.get(module, td, H1)
    torch.testing.assert_close(h1, first_hidden(module, td["observation"]))
    both = thr.get(module, td, [H1, "module.1.module.1"])
    assert set(both) == {H1, "module.1.module.1"}
    out = thr.set(module, td, {H1: torch.zeros_like(h1)})
    torch.testing.assert_close(out["logits"], actor_from_h1(module, torch.zeros_like(h1)))
    assert "logits" not in td.keys()  # the caller's TensorDict is not written
    with thr.intervene(module, {H1: Ablate()}, td):
        inside = module(td.clone())
    torch.testing.assert_close(inside["logits"], out["logits"])
    assert no_hooks(module)


def test_bad_input_names_the_site():
    module = actor_critic_mlp()
    with pytest.raises(ValueError, match=r"site 'module.0.module.9'.*nearest valid sites"):
        thr.Intervened(module, {"module.0.module.9": Ablate()})
    td = obs_td()
    with pytest.raises(ValueError, match=r"site 'module.0.module.1': patch source has shape"):
        thr.Intervened(module, {H1: Patch(torch.zeros(5, 32))})(td.clone())
    with pytest.raises(
        ValueError, match=r"site 'module.0.module.1': the steering vector is on meta"
    ):
        thr.Intervened(module, {H1: Steer(torch.ones(32, device="meta"))})(td.clone())
    with pytest.raises(IndexError, match=r"site 'module.0.module.1': units \[40\] out of range"):
        thr.Intervened(module, {H1: Ablate(units=[40])})(td.clone())
    with pytest.raises(ValueError, match="non-empty mapping"):
        thr.Intervened(module, {})


def test_steering_vector_is_a_difference_of_means():
    a, b = torch.randn(10, 4), torch.randn(7, 4)
    torch.testing.assert_close(steering_vector(a, b), a.mean(0) - b.mean(0))
    with pytest.raises(ValueError, match="differ in shape"):
        steering_vector(a, torch.randn(3, 5))


def test_inside_multi_sync_collector():
    policy = thr.Intervened(shared_trunk_actor_critic(), {"hidden": Ablate(units=[0, 1])})
    collector = MultiSyncCollector(
        [make_double_pendulum] * 2, policy, frames_per_batch=20, total_frames=20
    )
    try:
        batch = next(iter(collector)).reshape(-1)
    finally:
        shutdown_collector(collector)
    assert torch.all(batch["hidden"][:, :2] == 0)
    ac = shared_trunk_actor_critic()
    hidden = ac[0](batch.select("observation").clone())["hidden"]
    hidden[:, :2] = 0
    torch.testing.assert_close(batch["state_value"], ac.get_value_operator()[-1].module(hidden))
