"""Attribution patching (AtP) against the slow way: one site (or unit) patched at a time, and
the first-order term computed per site and per head with its own autograd call."""

from __future__ import annotations

import pickle

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    TensorDictModule,
    TensorDictSequential,
    set_interaction_type,
)
from torch import nn

import tdhook_rl as thr
from tdhook_rl.latent.attribution_patching import spearman
from tdhook_rl.targets import ActionLogProb, Index, as_targets, per_sample

from models import OBS, actor_critic_mlp, shared_trunk_actor_critic

MLP_SITES = ["module.0.module.0", "module.0.module.1", "module.0.module.3", "module.1.module.2"]
MLP_HEADS = {"logit1": Index("logits", 1), "value": "state_value"}


def _heads(module, td, reference, heads, replace=None):
    """``[n_heads, *batch]`` of ``module(td)``, with ``replace = (path, fn)`` applied to the
    output of that submodule by a plain forward hook (independent of tdhook_rl's hooks)."""
    handle = None
    if replace is not None:
        path, fn = replace
        handle = module.get_submodule(path).register_forward_hook(lambda m, i, o: fn(o))
    try:
        with set_interaction_type(InteractionType.DETERMINISTIC):
            out = module(td.clone())
        targets = as_targets(heads, module, kind="head")
        return torch.stack(
            [per_sample(t(out, reference), out.batch_size, t) for t in targets.values()]
        )
    finally:
        if handle is not None:
            handle.remove()


def _activation(module, td, path):
    seen = []
    handle = module.get_submodule(path).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
            module(td.clone())
    finally:
        handle.remove()
    return seen[0].detach()


def _reference(module, clean):
    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        return module(clean.clone())


def slow_first_order(module, clean, corrupted, heads, path):
    """``[n_heads, *batch, *units]``: ``(a_clean - a_corrupt) * d head / d a`` at the corrupted
    run, one site and one head per autograd call, the site's output replaced by a leaf."""
    reference = _reference(module, clean)
    a_clean, a_corrupt = _activation(module, clean, path), _activation(module, corrupted, path)
    rows = []
    for name, head in heads.items():
        leaf = a_corrupt.clone().requires_grad_()
        with torch.enable_grad():
            value = _heads(module, corrupted, reference, {name: head}, (path, lambda o, v=leaf: v))
            (grad,) = torch.autograd.grad(value.sum(), leaf, allow_unused=True)
        rows.append((a_clean - a_corrupt) * (torch.zeros_like(leaf) if grad is None else grad))
    return torch.stack(rows)


def slow_exact(module, clean, corrupted, heads, path, unit=None):
    """``[n_heads, *batch]``: patched minus corrupted, the site (or one unit) set to its clean
    activation in the corrupted run."""
    reference = _reference(module, clean)
    a_clean = _activation(module, clean, path)

    def patch(out):
        if unit is None:
            return a_clean
        out = out.clone()
        out[..., unit] = a_clean[..., unit]
        return out

    with torch.no_grad():
        patched = _heads(module, corrupted, reference, heads, (path, patch))
        return patched - _heads(module, corrupted, reference, heads)


def _pair(shape, module_obs=OBS, dtype=torch.float32):
    clean = TensorDict(observation=torch.randn(*shape, module_obs, dtype=dtype), batch_size=shape)
    corrupted = TensorDict(
        observation=torch.randn(*shape, module_obs, dtype=dtype), batch_size=shape
    )
    return clean, corrupted


def _linear_actor_critic():
    """Linear layers only: every head is exactly linear in every site's activation."""
    actor = nn.Sequential(nn.Linear(OBS, 6), nn.Linear(6, 5), nn.Identity(), nn.Linear(5, 3))
    critic = nn.Sequential(nn.Linear(OBS, 4), nn.Linear(4, 1))
    return TensorDictSequential(
        TensorDictModule(actor, ["observation"], ["logits"]),
        TensorDictModule(critic, ["observation"], ["state_value"]),
    )


def test_matches_the_per_site_per_head_first_order_term(batch_shape):
    module = actor_critic_mlp()
    clean, corrupted = _pair(batch_shape)
    result = thr.attribution_patching(module, clean, corrupted, MLP_HEADS, MLP_SITES, per_unit=True)
    assert result.sites == MLP_SITES and result.heads == ["logit1", "value"]
    assert result.effects.shape == (len(MLP_SITES), 2, *batch_shape)
    for i, path in enumerate(MLP_SITES):
        slow = slow_first_order(module, clean, corrupted, MLP_HEADS, path)
        torch.testing.assert_close(result.units[path], slow, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            result.effects[i], slow.flatten(1 + len(batch_shape)).sum(-1), rtol=1e-4, atol=1e-5
        )
    # the restored fraction: mean effect over the gap of the head means
    gap = result.clean.reshape(2, -1).mean(1) - result.corrupted.reshape(2, -1).mean(1)
    mean = result.effects.reshape(len(MLP_SITES), 2, -1).mean(-1)
    torch.testing.assert_close(result.estimate, mean / gap)
    # the actor's sites do not move the value, the critic's not the logit
    assert result.effects[:3, 1].abs().max() == 0 and result.effects[3, 0].abs().max() == 0
    assert "module.0.module.3" in str(result)


def test_action_log_prob_head_and_key_sites():
    module = shared_trunk_actor_critic()
    clean, corrupted = _pair((6,))
    heads = {"policy": ActionLogProb(), "value": "state_value"}
    result = thr.attribution_patching(
        module, clean, corrupted, heads, ["module.0.module.0", "module.0.module.1", "hidden"]
    )
    for i, path in enumerate(["module.0.module.0", "module.0.module.1"]):
        slow = slow_first_order(module, clean, corrupted, heads, path)
        torch.testing.assert_close(result.effects[i], slow.sum(-1), rtol=1e-4, atol=1e-5)
    # the key "hidden" is the trunk's Tanh output: the same estimate
    torch.testing.assert_close(result.effects[2], result.effects[1])


def test_exact_on_a_linear_network_per_site_and_per_unit(batch_shape):
    module = _linear_actor_critic()
    clean, corrupted = _pair(batch_shape)
    heads = {"logit0": ("logits", 0), "logit2": ("logits", 2), "value": "state_value"}
    sites = ["module.0.module.0", "module.0.module.1", "module.0.module.2", "module.1.module.0"]
    result = thr.attribution_patching(module, clean, corrupted, heads, sites, per_unit=True)
    exact = thr.activation_patching(module, clean, corrupted, heads, sites) if batch_shape else None
    for i, path in enumerate(sites):
        want = slow_exact(module, clean, corrupted, heads, path)
        torch.testing.assert_close(result.effects[i], want, rtol=1e-4, atol=1e-5)
        for unit in (0, 2):
            want = slow_exact(module, clean, corrupted, heads, path, unit)
            torch.testing.assert_close(result.units[path][..., unit], want, rtol=1e-4, atol=1e-5)
    if exact is not None:  # activation_patching itself cannot take batch () (its means)
        torch.testing.assert_close(result.estimate, exact.restored, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(result.patched, exact.patched, rtol=1e-4, atol=1e-5)


class _Branches(nn.Module):
    """Three linear branches summed: each restores its own share of the change."""

    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(OBS, 3) for _ in range(3))
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(sum(branch(x) * (i + 1) for i, branch in enumerate(self.branches)))


def test_rank_correlation_is_one_where_the_estimate_is_exact():
    module = TensorDictModule(_Branches(), ["observation"], ["logits"])
    clean, corrupted = _pair((32,))
    heads = {"a": ("logits", 0), "b": ("logits", 1)}
    sites = ["module.branches.0", "module.branches.1", "module.branches.2"]
    result = thr.attribution_patching(module, clean, corrupted, heads, sites)
    exact = thr.activation_patching(module, clean, corrupted, heads, sites)
    torch.testing.assert_close(result.estimate, exact.restored, rtol=1e-4, atol=1e-5)
    assert len(set(exact.restored[:, 0].tolist())) == 3  # distinct shares: a real ranking
    assert result.rank_correlation(exact) == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_error_is_second_order_on_a_nonlinear_network():
    module = actor_critic_mlp().double()
    clean = TensorDict(observation=torch.randn(16, OBS, dtype=torch.float64), batch_size=[16])
    direction = torch.randn(16, OBS, dtype=torch.float64)
    errors = []
    for eps in (1e-2, 1e-3):
        corrupted = TensorDict(observation=clean["observation"] + eps * direction, batch_size=[16])
        result = thr.attribution_patching(module, clean, corrupted, MLP_HEADS, MLP_SITES)
        exact = torch.stack([slow_exact(module, clean, corrupted, MLP_HEADS, p) for p in MLP_SITES])
        errors.append(float((result.effects - exact).abs().max()))
    assert errors[1] < errors[0] / 30  # quadratic: ~100x smaller for a 10x smaller change


def test_works_under_inference_mode_and_leaves_the_module_as_it_was():
    module = actor_critic_mlp()
    clean, corrupted = _pair((4, 3))
    before = module(clean.clone())
    want = thr.attribution_patching(module, clean, corrupted, MLP_HEADS, MLP_SITES)
    with torch.inference_mode():
        inf_clean, inf_corrupted = clean.clone(), corrupted.clone()
        got = thr.attribution_patching(module, inf_clean, inf_corrupted, MLP_HEADS, MLP_SITES)
    torch.testing.assert_close(got.effects, want.effects)

    def boom(td):
        raise RuntimeError("head failed")

    with pytest.raises(RuntimeError, match="head failed"):
        thr.attribution_patching(module, clean, corrupted, {"bad": boom}, MLP_SITES)
    with pytest.raises(RuntimeError, match="not reached"):  # raised after the hooks ran
        thr.attribution_patching(module, clean, corrupted, MLP_HEADS, [_unreached(module)])
    _assert_untouched(module)
    torch.testing.assert_close(module(clean.clone())["logits"], before["logits"])


def _assert_untouched(module):
    for name, sub in module.named_modules():
        assert not sub._forward_hooks and not sub._forward_pre_hooks, name
        assert "forward" not in sub.__dict__, name
    assert all(p.grad is None for p in module.parameters())
    pickle.dumps(module)


def _unreached(module):
    """A leaf the forward pass never runs, hung on the critic's TensorDictModule."""
    module.get_submodule("module.1").add_module("unused", nn.Linear(2, 2))
    return "module.1.unused"


class _Rounds(nn.Module):
    def forward(self, x):
        return x.round().long()


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(OBS, OBS)

    def forward(self, x):
        return self.lin(self.lin(x)).sum(-1, keepdim=True)


def test_bad_input_names_the_site():
    module = actor_critic_mlp()
    clean, corrupted = _pair((5,))
    heads = {"value": "state_value"}
    site = _unreached(module)
    with pytest.raises(RuntimeError, match=r"sites \[.module.1.unused.\] were not reached"):
        thr.attribution_patching(module, clean, corrupted, heads, [site])
    with pytest.raises(ValueError, match=r"clean and corrupted batches differ: \(5,\) vs \(3,\)"):
        thr.attribution_patching(module, clean, corrupted[:3], heads, MLP_SITES)

    net = nn.Sequential(_Rounds(), nn.Embedding(8, 1))  # integer activations, then a lookup
    indexed = TensorDictModule(net, ["observation"], ["state_value"])
    small = TensorDict(observation=torch.rand(5, 1) * 7, batch_size=[5])
    with pytest.raises(TypeError, match=r"site 'module.0' gives a torch.int64 tensor"):
        thr.attribution_patching(indexed, small, small.clone(), heads, ["module.0"])

    twice = TensorDictModule(_Twice(), ["observation"], ["state_value"])
    with pytest.raises(RuntimeError, match=r"site 'module\.lin' ran more than once"):
        thr.attribution_patching(twice, clean, corrupted, heads, ["module.lin"])

    with pytest.raises(ValueError, match="nearest valid sites"):
        thr.attribution_patching(module, clean, corrupted, heads, ["module.1.modul.2"])

    result = thr.attribution_patching(module, clean, corrupted, heads, MLP_SITES)
    assert result.effects[:3].abs().max() == 0  # one head, sites it does not depend on
    exact = thr.activation_patching(module, clean, corrupted, heads, MLP_SITES[:2])
    with pytest.raises(ValueError, match="run both with the same sites and heads"):
        result.rank_correlation(exact)
    for raised_inside in (module, indexed, twice):  # errors raised inside the hooks
        _assert_untouched(raised_inside)


def test_sample_correlation_and_spearman():
    scipy_stats = pytest.importorskip("scipy.stats")
    x = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 5.0, 5.0, 0.0])
    y = torch.tensor([1.0, 0.0, 4.0, 4.0, 2.0, 7.0, 7.0, -1.0])
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    assert spearman(x, -x) == pytest.approx(-1.0)
    with_nan = torch.cat([x, torch.tensor([float("nan")])])
    assert spearman(with_nan, torch.cat([y, torch.tensor([9.0])])) == pytest.approx(spearman(x, y))
    assert spearman(torch.ones(4), x[:4]) != spearman(torch.ones(4), x[:4])  # constant: NaN

    module = _linear_actor_critic()
    clean, corrupted = _pair((12,))
    heads = {"value": "state_value"}
    sites = ["module.1.module.0", "module.1.module.1"]
    result = thr.attribution_patching(module, clean, corrupted, heads, sites)
    exact = thr.activation_patching(module, clean, corrupted, heads, sites)
    torch.testing.assert_close(result.sample_correlation(exact), torch.ones(2, 1))
