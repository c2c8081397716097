"""One readout vocabulary: targets, probe labels and patching heads parse the same specs the
same way, reduce them to one scalar per sample the same way, and name a missing key alike."""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.attribution import Saliency
from tdhook_rl.core.keys import as_key
from tdhook_rl.latent.splits import labels_from
from tdhook_rl.targets import (
    ActionLoc,
    ActionLogProb,
    ActionValue,
    FromCallable,
    Index,
    Key,
    as_target,
)

from models import OBS, actor_critic_mlp, gaussian_actor

BATCHES = [(), (5,), (3, 4)]


def obs_td(batch):
    return TensorDict(observation=torch.randn(*batch, OBS), batch_size=batch)


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [("agents", 3, "obs"), ("action", 5), ("a", ("b", 0))])
def test_as_key_refuses_a_non_string_part(key):
    with pytest.raises(TypeError, match=r"has a part .* that is not a string.*Index\(key, i\)"):
        as_key(key)


def test_as_key_still_flattens_nested_string_keys():
    assert as_key(("a", ("b",))) == ("a", "b")
    assert as_key(("observation",)) == "observation"


# --- one parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("state_value", Key("state_value")),
        (("next", "reward"), Key(("next", "reward"))),
        (("logits", 2), Index("logits", 2)),
        ((("sim", "qpos"), 1), Index(("sim", "qpos"), 1)),
        (("agents", "state_value", 2, 0), Index(("agents", "state_value"), (2, 0))),
        (("logits", (1, 2)), Index("logits", (1, 2))),
    ],
)
def test_a_key_followed_by_integers_is_an_index(spec, want):
    got = as_target(spec)
    assert type(got) is type(want) and repr(got) == repr(want)


@pytest.mark.parametrize("spec", [3, (1, 2), None, torch.zeros(3)])
def test_anything_else_is_refused_with_the_spellings(spec):
    with pytest.raises(TypeError, match=r"a target must be a key of a per-sample scalar.*callable"):
        as_target(spec)


@pytest.mark.parametrize("batch", BATCHES)
def test_key_and_index_target_means_index_in_attributed(batch):
    """``("logits", 2)`` was a nested key (explaining all of ``logits``); it is Index now."""
    td = obs_td(batch)
    explained = thr.Attributed(
        actor_critic_mlp(),
        Saliency(abs=False),
        inputs=["observation"],
        targets={"tuple": ("logits", 2), "index": Index("logits", 2)},
    )
    out = explained(td)["attribution"]
    assert out["tuple", "observation"].shape == (*batch, OBS)
    torch.testing.assert_close(out["tuple", "observation"], out["index", "observation"])


def test_an_index_past_a_one_wide_entry_is_an_error_not_the_whole_entry():
    """``("v", 5)`` on a ``[*batch, 1]`` entry used to explain ``v`` itself."""
    module = TensorDictModule(torch.nn.Linear(OBS, 1), ["observation"], ["v"])
    explained = thr.Attributed(module, "saliency", inputs=["observation"], targets={"t": ("v", 5)})
    with pytest.raises(IndexError, match=r"target 't': index \(5,\) is out of range.*of 'v'"):
        explained(obs_td((3,)))
    ok = thr.Attributed(module, "saliency", inputs=["observation"], targets={"t": ("v", 0)})
    assert ok(obs_td((3,)))["attribution", "t", "observation"].shape == (3, OBS)


@pytest.mark.parametrize("batch", [(6,), (2, 3)])
def test_labels_targets_and_heads_read_a_spec_alike(batch):
    module = actor_critic_mlp()
    td = module(obs_td(batch))
    specs = {"tuple": ("logits", 1), "index": Index("logits", 1), "key": "state_value"}
    labels = labels_from(td, specs)
    torch.testing.assert_close(labels["tuple"], td["logits"][..., 1])
    torch.testing.assert_close(labels["index"], td["logits"][..., 1])
    torch.testing.assert_close(labels["key"], td["state_value"][..., 0])
    corrupted = obs_td(batch)
    result = thr.activation_patching(module, obs_td(batch), corrupted, specs, ["module.0.module.1"])
    torch.testing.assert_close(result.clean[0], result.clean[1])  # (key, i) == Index(key, i)
    assert result.clean.shape == (3, *batch)


def test_a_missing_key_reads_the_same_for_targets_labels_and_heads():
    module = actor_critic_mlp()
    message = r"reads key 'nope', which is missing; the TensorDict holds \[.*logits.*\]"
    explained = thr.Attributed(module, "saliency", inputs=["observation"], targets={"t": "nope"})
    with pytest.raises(KeyError, match=rf"target 't' {message}"):
        explained(obs_td((3,)))
    with pytest.raises(KeyError, match=rf"label 'l' {message}"):
        labels_from(module(obs_td((3,))), {"l": ("nope", 0)})
    with pytest.raises(KeyError, match=rf"head 'h' {message}"):
        thr.activation_patching(
            module, obs_td((3,)), obs_td((3,)), {"h": "nope"}, ["module.0.module.1"]
        )


def test_one_scalar_per_sample_reads_the_same_for_targets_labels_and_heads():
    module = actor_critic_mlp()
    message = r"must give one scalar per sample.*per-sample shape \(4,\).*Index\('logits', i\)"
    explained = thr.Attributed(module, "saliency", inputs=["observation"], targets={"t": "logits"})
    with pytest.raises(ValueError, match=rf"target 't' \(Key\('logits'\)\) {message}"):
        explained(obs_td((3,)))
    with pytest.raises(ValueError, match=rf"label 'l' \(Key\('logits'\)\) {message}"):
        labels_from(module(obs_td((3,))), {"l": "logits"})
    with pytest.raises(ValueError, match=rf"head 'h' \(Key\('logits'\)\) {message}"):
        thr.activation_patching(
            module, obs_td((3,)), obs_td((3,)), {"h": "logits"}, ["module.0.module.1"]
        )


def test_a_label_cannot_read_the_module():
    td = actor_critic_mlp()(obs_td((3,)))
    with pytest.raises(TypeError, match=r"label 'p' is ActionLogProb\(\), which reads the module"):
        labels_from(td, {"p": ActionLogProb()})


# --- what a target says about itself ---------------------------------------------------------


def test_targets_say_whether_they_are_a_gatherable_column():
    assert Index("logits", 1).column == ("logits", 1)
    assert Index(("agents", "q"), (1, 0)).column is None
    assert Key("logits").column is None
    assert FromCallable(lambda td: td["x"]).column is None
    actor = gaussian_actor()
    assert ActionLoc(index=1).bind(actor).column == ("loc", 1)
    assert ActionLoc().bind(actor).column is None
    assert ActionLogProb().bind(actor).column is None


@pytest.mark.parametrize("target", [ActionLogProb(), ActionValue(), ActionLoc()])
def test_module_targets_bind_the_same_way(target):
    assert target.needs_module
    with pytest.raises(RuntimeError, match=r"must be bound to a module first"):
        target(TensorDict(), TensorDict())


def loc_column(td, i):
    return td["loc"][..., i]


def test_gathered_columns_equal_one_target_at_a_time():
    """Consecutive columns of one entry (Index or ActionLoc) are read by one gather."""
    td = obs_td((4,))
    columns = {f"loc{i}": ActionLoc(index=i) for i in range(2)}
    slow = {f"slow{i}": functools.partial(loc_column, i=i) for i in range(2)}
    explained = thr.Attributed(
        gaussian_actor(), Saliency(abs=False), inputs=["observation"], targets=columns | slow
    )
    out = explained(td)["attribution"]
    for i in range(2):
        torch.testing.assert_close(out[f"loc{i}", "observation"], out[f"slow{i}", "observation"])
