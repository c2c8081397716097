"""``Recorded(..., packed=True)``: one carried entry, unpacked into the per-site layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import LazyTensorStorage, ReplayBuffer

import tdhook_rl as thr

from collector_helpers import shutdown_collector
from models import (
    ACTOR_CRITIC_SITES,
    OBS,
    actor_critic_mlp,
    conv_actor_critic,
    make_double_pendulum,
    shared_trunk_actor_critic,
)

SITES = ACTOR_CRITIC_SITES


def test_unpacked_activations_match_a_slow_recomputation(batch_shape):
    module = actor_critic_mlp()
    recorded = thr.Recorded(module, SITES, packed=True)
    obs = torch.randn(*batch_shape, OBS)
    out = recorded(TensorDict(observation=obs, batch_size=batch_shape))
    assert out["activations"].shape == (*batch_shape, 32 + 32 + OBS)
    unpacked = recorded.unpack(out)
    net = module[0].module
    h1 = torch.tanh(obs @ net[0].weight.T + net[0].bias)
    h2 = torch.tanh(h1 @ net[2].weight.T + net[2].bias)
    torch.testing.assert_close(unpacked["activations", "actor_h1"], h1)
    torch.testing.assert_close(unpacked["activations", "actor_h2"], h2)
    torch.testing.assert_close(unpacked["activations", "critic_in"], obs)
    # the input keeps its packed entry; the unpacked entries are views of it
    assert isinstance(out["activations"], torch.Tensor)
    base = out["activations"].untyped_storage().data_ptr()
    for value in unpacked["activations"].values():
        assert value.untyped_storage().data_ptr() == base
    assert recorded.unpack(unpacked) is unpacked  # already unpacked: returned as it is
    assert repr(recorded).endswith("packed=True)")


def test_multi_dimensional_sites_keep_their_shape():
    module = conv_actor_critic()
    sites = {"conv1": "module.conv.1", "conv2": "module.conv.3"}
    board = torch.randn(2, 6, 3, 5, 5)
    packed = thr.Recorded(module, sites, packed=True)
    # two batches stacked along a new leading dim, as a rollout stacks its steps
    steps = [packed(TensorDict(board=b, batch_size=[6])) for b in board]
    unpacked = packed.unpack(torch.stack(steps))
    assert packed.layout == {"conv1": (4, 5, 5), "conv2": (4, 3, 3)}
    conv = module.module.conv
    flat = board.reshape(-1, 3, 5, 5)
    c1 = F.relu(F.conv2d(flat, conv[0].weight, conv[0].bias, padding=1))
    c2 = F.softplus(F.conv2d(c1, conv[2].weight, conv[2].bias))
    torch.testing.assert_close(unpacked["activations", "conv1"], c1.reshape(2, 6, 4, 5, 5))
    torch.testing.assert_close(unpacked["activations", "conv2"], c2.reshape(2, 6, 4, 3, 3))


def test_env_rollout_then_unpack_equals_the_per_site_layout():
    sites = {"trunk": "module.0.module.1", "value": "state_value"}
    env = make_double_pendulum()
    env.set_seed(0)
    packed = thr.Recorded(shared_trunk_actor_critic(), sites, packed=True)
    rollout = packed.unpack(env.rollout(15, packed, break_when_any_done=False))
    env.close()
    assert rollout["activations", "trunk"].shape == (15, 32)
    reference = shared_trunk_actor_critic()(rollout.select("observation").clone())
    torch.testing.assert_close(rollout["activations", "trunk"], reference["hidden"])
    torch.testing.assert_close(rollout["activations", "value"], reference["state_value"])


def test_collectors_with_unpack_as_postproc():
    sites = {"trunk": "module.0.module.1"}
    policy = thr.Recorded(shared_trunk_actor_critic(), sites, packed=True)
    collector = Collector(
        make_double_pendulum,
        policy,
        frames_per_batch=16,
        total_frames=48,
        postproc=policy.unpack,
    )
    trunk = shared_trunk_actor_critic()[0]
    try:
        batches = list(collector)  # the collector's buffer is reused: every batch unpacks
    finally:
        shutdown_collector(collector)
    assert len(batches) == 3
    for batch in batches:
        torch.testing.assert_close(batch["activations", "trunk"], trunk(batch.clone())["hidden"])

    # workers run copies of the policy: the main process learns the layout in unpack
    fresh = thr.Recorded(shared_trunk_actor_critic(), sites, packed=True)
    collector = MultiSyncCollector(
        [make_double_pendulum] * 2,
        fresh,
        frames_per_batch=20,
        total_frames=20,
        postproc=fresh.unpack,
    )
    try:
        batch = next(iter(collector)).reshape(-1)
    finally:
        shutdown_collector(collector)
    torch.testing.assert_close(batch["activations", "trunk"], trunk(batch.clone())["hidden"])


def test_packed_batches_in_a_replay_buffer_unpack_after_sampling():
    policy = thr.Recorded(
        shared_trunk_actor_critic(), {"trunk": "module.0.module.1", "v": "state_value"}, packed=True
    )
    collector = Collector(make_double_pendulum, policy, frames_per_batch=16, total_frames=32)
    buffer = ReplayBuffer(storage=LazyTensorStorage(64))
    try:
        for batch in collector:
            buffer.extend(batch)  # stored packed: one [32 + 1] entry per frame
    finally:
        shutdown_collector(collector)
    assert buffer[:]["activations"].shape == (32, 33)
    sample = policy.unpack(buffer.sample(8))
    reference = shared_trunk_actor_critic()(sample.select("observation").clone())
    torch.testing.assert_close(sample["activations", "trunk"], reference["hidden"])
    torch.testing.assert_close(sample["activations", "v"], reference["state_value"])
    # unpack as the buffer's transform: probes stream the stored packed data directly
    readable = ReplayBuffer(storage=buffer.storage, transform=policy.unpack)
    assert isinstance(readable.storage[:]["activations"], torch.Tensor)  # stored packed
    per_site = ReplayBuffer(storage=LazyTensorStorage(64))
    per_site.extend(policy.unpack(buffer[:]))
    labels = {"cart": ("observation", 0)}
    streamed = thr.probes.fit_probes(readable, ["trunk"], labels).rows
    assert streamed == thr.probes.fit_probes(per_site, ["trunk"], labels).rows
    assert streamed[0]["n_train"] + streamed[0]["n_test"] == 32


def test_a_wrapper_that_never_ran_learns_the_layout_without_touching_the_rng():
    sites = {"h1": "module.0.module.1", "logits": "logits"}
    data = thr.Recorded(actor_critic_mlp(), sites, packed=True)(
        TensorDict(observation=torch.randn(4, 7, OBS), batch_size=[4, 7])
    )
    fresh = thr.Recorded(actor_critic_mlp(), sites, packed=True)
    assert fresh.layout is None
    state = torch.get_rng_state()
    unpacked = fresh.unpack(data)
    assert torch.equal(torch.get_rng_state(), state)
    assert fresh.layout == {"h1": (32,), "logits": (4,)}
    torch.testing.assert_close(
        unpacked["activations", "logits"], actor_critic_mlp()(data.clone())["logits"]
    )


def test_bad_input_gives_clear_errors():
    obs = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    choice = TensorDictModule(lambda x: x.argmax(-1, keepdim=True), ["logits"], ["choice"])
    mixed = TensorDictSequential(actor_critic_mlp(), choice)
    with pytest.raises(TypeError, match="one dtype"):
        thr.Recorded(mixed, {"h": "module.0.module.0.module.1", "c": "choice"}, packed=True)(
            obs.clone()
        )
    plain = thr.Recorded(actor_critic_mlp(), SITES)
    with pytest.raises(ValueError, match="packed=True"):
        plain.unpack(plain(obs.clone()))
    inner = thr.Recorded(actor_critic_mlp(), SITES, packed=True)
    with pytest.raises(ValueError, match="another out_key"):
        thr.Recorded(inner, {"h": "module.0.module.1"}, packed=True)
    outer = thr.Recorded(thr.Recorded(actor_critic_mlp(), SITES), {"v": "state_value"}, packed=True)
    with pytest.raises(ValueError, match="its own out_key"):
        outer(obs.clone())
    packed = thr.Recorded(actor_critic_mlp(), SITES, packed=True)
    with pytest.raises(KeyError, match="no recorded activations"):
        packed.unpack(obs.clone())
    packed(obs.clone())
    shaped = thr.Recorded(
        TensorDictModule(torch.nn.Identity(), ["x"], ["y"]), ["module", "y"], packed=True
    )
    shaped(TensorDict(x=torch.ones(3, 4), batch_size=[3]))
    with pytest.raises(ValueError, match=r"site 'module' gives features of shape \(5,\)"):
        shaped(TensorDict(x=torch.ones(3, 5), batch_size=[3]))
    with pytest.raises(ValueError, match="not recorded by this wrapper"):
        packed.unpack(obs.clone().set("activations", torch.zeros(3, 5)))
