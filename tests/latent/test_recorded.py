"""``Recorded``: activations written into the TensorDict, module unchanged, hooks always gone."""

from __future__ import annotations

import pickle

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector, MultiSyncCollector

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients

from collector_helpers import shutdown_collector
from models import (
    ACTOR_CRITIC_SITES,
    OBS,
    actor_critic_mlp,
    gaussian_actor,
    make_double_pendulum,
    shared_trunk_actor_critic,
)

SITES = ACTOR_CRITIC_SITES


def no_hooks(module: torch.nn.Module) -> bool:
    """No hook and no shadowed ``forward`` left on any submodule."""
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__
        for m in module.modules()
    )


def test_activations_match_a_slow_recomputation(batch_shape):
    module = actor_critic_mlp()
    recorded = thr.Recorded(module, SITES)
    obs = torch.randn(*batch_shape, OBS)
    out = recorded(TensorDict(observation=obs, batch_size=batch_shape))
    net = module[0].module  # Linear, Tanh, Linear, Tanh, Linear
    h1 = torch.tanh(obs @ net[0].weight.T + net[0].bias)
    h2 = torch.tanh(h1 @ net[2].weight.T + net[2].bias)
    torch.testing.assert_close(out["activations", "actor_h1"], h1)
    torch.testing.assert_close(out["activations", "actor_h2"], h2)
    torch.testing.assert_close(out["activations", "critic_in"], obs)
    assert no_hooks(module)


def test_key_site_and_list_of_sites():
    module = shared_trunk_actor_critic()
    recorded = thr.Recorded(module, ["hidden", "module.0.module.0"])
    out = recorded(TensorDict(observation=torch.randn(3, OBS), batch_size=[3]))
    torch.testing.assert_close(out["activations", "hidden"], out["hidden"])
    assert out["activations", "module.0.module.0"].shape == (3, 32)
    assert ("activations", "hidden") in recorded.out_keys


def test_recording_does_not_change_actions():
    raw, recorded = gaussian_actor(), thr.Recorded(gaussian_actor(), ["module.0.module.0.1"])
    obs = torch.randn(8, OBS)
    torch.manual_seed(4)
    want = raw(TensorDict(observation=obs, batch_size=[8]))
    torch.manual_seed(4)
    got = recorded(TensorDict(observation=obs, batch_size=[8]))
    assert torch.equal(got["action"], want["action"])
    assert torch.equal(got["action_log_prob"], want["action_log_prob"])


def test_unknown_site_lists_the_nearest_valid_ones():
    with pytest.raises(ValueError, match=r"site 'module.0.module.7'.*nearest valid sites: \["):
        thr.Recorded(actor_critic_mlp(), ["module.0.module.7"])
    with pytest.raises(ValueError, match=r"site 'hiden'.*'hidden'"):
        thr.Recorded(shared_trunk_actor_critic(), ["hiden"])


def test_tensordict_module_site_says_what_to_record():
    recorded = thr.Recorded(actor_critic_mlp(), {"actor": "module.0"})
    with pytest.raises(TypeError, match=r"site 'actor' is a TensorDict module"):
        recorded(TensorDict(observation=torch.randn(2, OBS), batch_size=[2]))


def test_hooks_removed_after_an_exception():
    module = actor_critic_mlp()
    recorded = thr.Recorded(module, SITES)
    with pytest.raises(RuntimeError):
        recorded(TensorDict(observation=torch.randn(2, OBS + 1), batch_size=[2]))
    assert no_hooks(module)


def test_pickles():
    recorded = thr.Recorded(actor_critic_mlp(), SITES)
    clone = pickle.loads(pickle.dumps(recorded))
    td = TensorDict(observation=torch.randn(2, OBS), batch_size=[2])
    torch.testing.assert_close(
        clone(td.clone())["activations"], recorded(td.clone())["activations"]
    )


def test_records_the_real_call_around_an_attributed_module():
    """The attribution pass calls the network again on a larger batch: not recorded."""
    inner = thr.Attributed(
        actor_critic_mlp(),
        IntegratedGradients(n_steps=8),
        inputs=["observation"],
        targets={"value": "state_value"},
    )
    recorded = thr.Recorded(inner, SITES)
    out = recorded(TensorDict(observation=torch.randn(5, OBS), batch_size=[5]))
    plain = thr.Recorded(actor_critic_mlp(), SITES)(out.select("observation").clone())
    torch.testing.assert_close(out["activations"], plain["activations"])
    assert out["attribution", "value", "observation"].shape == (5, OBS)


def test_nested_recorders_share_the_root_and_carried_over_activations_are_refreshed():
    """Two wrappers under one root keep each other's entries; a TensorDict that still holds
    the previous step's activations (a collector's carrier) gets this step's."""
    module = actor_critic_mlp()
    outer = thr.Recorded(thr.Recorded(module, {"h1": SITES["actor_h1"]}), {"h2": SITES["actor_h2"]})
    single = thr.Recorded(module, SITES)
    td = TensorDict(observation=torch.randn(4, OBS), batch_size=[4])
    for recorder, names in ((outer, {"h1": "actor_h1", "h2": "actor_h2"}), (single, None)):
        out = recorder(td.clone())
        for _ in range(2):  # the second call sees the first call's activations
            out["observation"] = torch.randn(4, OBS)
            out = recorder(out)
            fresh = single(TensorDict(observation=out["observation"], batch_size=[4]))
            for name, site in (names or {n: n for n in SITES}).items():
                torch.testing.assert_close(out["activations", name], fresh["activations", site])
            assert set(out["activations"].keys()) == set(names or SITES)
    assert no_hooks(module)


def test_activations_are_detached_under_grad_and_follow_the_tensordict_device():
    recorded = thr.Recorded(actor_critic_mlp(), SITES)
    out = recorded(TensorDict(observation=torch.randn(3, OBS), batch_size=[3]))
    assert not any(v.requires_grad for v in out["activations"].values())
    from tdhook_rl.latent.recorded import _as_tensordict

    values = {"a": torch.ones(3, 2)}
    moved = _as_tensordict(values, torch.Size([3]), torch.device("meta"))
    assert moved.device.type == "meta" and moved["a"].device.type == "meta"
    kept = _as_tensordict(values, torch.Size([3]), None)
    assert kept["a"] is values["a"] and kept.batch_size == (3,)


def test_env_rollout_and_collectors():
    env = make_double_pendulum()
    sites = {"trunk": "module.0.module.1"}
    rollout = env.rollout(20, thr.Recorded(shared_trunk_actor_critic(), sites))
    assert rollout["activations", "trunk"].shape == (*rollout.batch_size, 32)
    env.close()
    policy = thr.Recorded(shared_trunk_actor_critic(), sites)
    collector = Collector(make_double_pendulum, policy, frames_per_batch=16, total_frames=16)
    batch = next(iter(collector))
    shutdown_collector(collector)
    assert batch["activations", "trunk"].shape == (16, 32)
    collector = MultiSyncCollector(
        [make_double_pendulum] * 2, policy, frames_per_batch=20, total_frames=20
    )
    try:
        batch = next(iter(collector)).reshape(-1)
    finally:
        shutdown_collector(collector)
    trunk = shared_trunk_actor_critic()[0]
    torch.testing.assert_close(batch["activations", "trunk"], trunk(batch.clone())["hidden"])
