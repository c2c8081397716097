"""``Attributed`` as a drop-in module: unchanged outputs, shapes, grad hygiene, state, pickling."""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.attribution import InputXGradient, IntegratedGradients, Saliency, SmoothGrad
from tdhook_rl.targets import ActionLogProb, Index

from models import N_LOGITS, OBS, actor_critic_mlp, gaussian_actor, shared_trunk_actor_critic

AC_TARGETS = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)} | {"value": "state_value"}


def explained_ac(method=None, **kwargs):
    return thr.Attributed(
        actor_critic_mlp(),
        method or IntegratedGradients(n_steps=8),
        inputs=["observation"],
        targets=AC_TARGETS,
        **kwargs,
    )


@pytest.mark.parametrize(
    "method",
    [Saliency(), InputXGradient(), IntegratedGradients(n_steps=6), SmoothGrad(n_samples=3)],
    ids=repr,
)
def test_shapes_and_keys(method, batch_shape):
    explained = explained_ac(method)
    td = TensorDict(observation=torch.randn(*batch_shape, OBS), batch_size=batch_shape)
    out = explained(td)
    for name in AC_TARGETS:
        assert out["attribution", name, "observation"].shape == (*batch_shape, OBS)
        has_delta = ("attribution", name, "completeness_delta") in out.keys(True)
        assert has_delta == method.has_convergence_delta
    assert set(explained.out_keys) <= set(out.keys(True, True))


def test_equals_a_loop_over_targets(batch_shape):
    """One batched pass == one Attributed per target (the per-target loop it replaces)."""
    td = TensorDict(observation=torch.randn(*batch_shape, OBS), batch_size=batch_shape)
    together = explained_ac()(td.clone())
    for name, target in AC_TARGETS.items():
        alone = thr.Attributed(
            actor_critic_mlp(),
            IntegratedGradients(n_steps=8),
            inputs=["observation"],
            targets={name: target},
        )(td.clone())
        torch.testing.assert_close(
            together["attribution", name], alone["attribution", name], atol=1e-6, rtol=1e-5
        )


def _negated_logit(i: int, td: TensorDict) -> torch.Tensor:
    return -2 * td["logits"][..., i]


NINE = (
    {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)}
    | {f"neg{i}": functools.partial(_negated_logit, i) for i in range(N_LOGITS)}
    | {"value": "state_value"}
)


@pytest.mark.parametrize(
    "method",
    [
        Saliency(abs=False),
        InputXGradient(),
        IntegratedGradients(n_steps=6, chunk_size=4),
        SmoothGrad(IntegratedGradients(n_steps=4), n_samples=2),
    ],
    ids=repr,
)
@pytest.mark.parametrize("targets", [AC_TARGETS, NINE], ids=["5-targets", "9-targets"])
def test_strategies_agree(method, targets, batch_shape):
    """Reverse mode, forward mode and replication give the same attributions."""
    td = TensorDict(observation=torch.randn(*batch_shape, OBS), batch_size=batch_shape)
    results = {}
    for strategy in ("reverse", "forward", "replicate", "auto"):
        explained = thr.Attributed(
            actor_critic_mlp(), method, inputs=["observation"], targets=targets, strategy=strategy
        )
        if isinstance(method, SmoothGrad):
            method._generators.clear()  # same noise for every strategy
        results[strategy] = explained(td.clone())["attribution"]
    for strategy in ("forward", "replicate", "auto"):
        torch.testing.assert_close(results[strategy], results["reverse"], atol=1e-5, rtol=1e-4)


def test_auto_uses_forward_mode_when_there_are_fewer_features_than_targets():
    explained = thr.Attributed(
        actor_critic_mlp(),
        "saliency",
        inputs=["observation"],
        targets=NINE | {f"x{i}": Index("logits", i) for i in range(4)},
    )
    explained(TensorDict(observation=torch.randn(3, OBS), batch_size=[3]))
    assert explained.engine.forward_supported is True


def test_auto_falls_back_when_forward_mode_is_unsupported():
    """TanhNormal's safe tanh is a custom autograd.Function without a jvp."""
    targets = {"policy": ActionLogProb()} | {f"x{i}": Index("loc", 0) for i in range(9)}
    td = TensorDict(observation=torch.randn(4, OBS), batch_size=[4])
    auto = thr.Attributed(gaussian_actor(), "saliency", inputs=["observation"], targets=targets)
    torch.manual_seed(0)
    got = auto(td.clone())
    assert auto.engine.forward_supported is False
    reverse = thr.Attributed(
        gaussian_actor(), "saliency", inputs=["observation"], targets=targets, strategy="reverse"
    )
    torch.manual_seed(0)
    want = reverse(td.clone())
    torch.testing.assert_close(got["attribution"], want["attribution"])
    forward = thr.Attributed(
        gaussian_actor(), "saliency", inputs=["observation"], targets=targets, strategy="forward"
    )
    with pytest.raises(RuntimeError, match=r"strategy='forward' needs forward-mode AD"):
        forward(td.clone())


def test_chunked_ig_equals_unchunked():
    td = TensorDict(observation=torch.randn(3, 4, OBS), batch_size=[3, 4])
    a = explained_ac(IntegratedGradients(n_steps=20))(td.clone())["attribution"]
    b = explained_ac(IntegratedGradients(n_steps=20, chunk_size=6))(td.clone())["attribution"]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_ig_completeness_holds_on_every_sample():
    td = TensorDict(observation=torch.randn(32, OBS), batch_size=[32])
    out = explained_ac(IntegratedGradients(n_steps=64))(td)
    module = actor_critic_mlp()
    full = module(td.clone())
    zero = module(TensorDict(observation=torch.zeros(32, OBS), batch_size=[32]))
    for i in range(N_LOGITS):
        gap = full["logits"][:, i] - zero["logits"][:, i]
        total = out["attribution", f"logit{i}", "observation"].sum(-1)
        torch.testing.assert_close(total, gap, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(
            out["attribution", f"logit{i}", "completeness_delta"], total - gap, atol=1e-5, rtol=1e-4
        )


def test_outputs_and_sampled_actions_are_unchanged():
    raw = gaussian_actor()
    explained = thr.Attributed(
        gaussian_actor(),
        SmoothGrad(IntegratedGradients(n_steps=4)),
        inputs=["observation"],
        targets={"policy": ActionLogProb()},
    )
    obs = torch.randn(16, OBS)
    torch.manual_seed(3)
    want = raw(TensorDict(observation=obs, batch_size=[16]))
    next_raw = torch.rand(3)
    torch.manual_seed(3)
    got = explained(TensorDict(observation=obs, batch_size=[16]))
    next_explained = torch.rand(3)
    for key in raw.out_keys:
        assert torch.equal(got[key], want[key]), key
    # the random stream continues identically: the attribution pass consumed no random numbers
    assert torch.equal(next_explained, next_raw)


def test_no_gradient_leaks_and_user_tensors_untouched():
    explained = explained_ac()
    obs = torch.randn(5, OBS)
    td = TensorDict(observation=obs, batch_size=[5])
    with torch.no_grad():
        out = explained(td)
    assert not obs.requires_grad and obs.grad is None
    assert all(p.grad is None for p in explained.parameters())
    assert not any(v.requires_grad for v in out.values(True, True))
    # with grad on, the module's own outputs keep their graph (as without the wrapper);
    # the attributions are detached results
    out = explained(TensorDict(observation=obs, batch_size=[5]))
    assert out["logits"].requires_grad
    assert not out["attribution", "value", "observation"].requires_grad


def test_runs_under_inference_mode():
    explained = explained_ac()
    with torch.inference_mode():
        out = explained(TensorDict(observation=torch.randn(4, OBS), batch_size=[4]))
    assert out["attribution", "value", "observation"].abs().sum() > 0


def test_stands_aside_under_vmap():
    explained = explained_ac()
    obs = torch.randn(3, OBS)

    def value(x):
        return explained(TensorDict(observation=x))["state_value"]

    values = torch.vmap(value)(obs)
    want = actor_critic_mlp()(TensorDict(observation=obs, batch_size=[3]))["state_value"]
    torch.testing.assert_close(values, want)


def test_state_dict_and_parameters_are_the_raw_modules():
    from tensordict import TensorDict as TD

    raw = actor_critic_mlp(seed=5)
    explained = explained_ac()
    assert list(explained.state_dict()) == list(raw.state_dict())
    explained.load_state_dict(raw.state_dict())  # a raw checkpoint loads as is
    x = TensorDict(observation=torch.randn(2, OBS), batch_size=[2])
    torch.testing.assert_close(explained(x.clone())["logits"], raw(x.clone())["logits"])
    weights = TD.from_module(actor_critic_mlp(seed=6))
    weights.to_module(explained)  # collectors' weight sync
    torch.testing.assert_close(
        explained(x.clone())["logits"], actor_critic_mlp(seed=6)(x.clone())["logits"]
    )
    assert [n for n, _ in explained.named_modules()][1:] == [n for n, _ in raw.named_modules()][1:]


def test_delegates_actor_api_for_loss_modules():
    explained = thr.Attributed(
        gaussian_actor(), "saliency", inputs=["observation"], targets={"policy": ActionLogProb()}
    )
    td = TensorDict(observation=torch.randn(2, OBS), batch_size=[2])
    assert hasattr(explained, "get_dist")
    dist = explained.get_dist(td)
    assert dist.sample().shape == (2, 2)
    assert explained.dist_sample_keys == ["action"]


def test_pickles_and_still_works():
    explained = thr.Attributed(
        shared_trunk_actor_critic(),
        SmoothGrad(IntegratedGradients(8)),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "value": "state_value"},
    )
    clone = pickle.loads(pickle.dumps(explained))
    td = TensorDict(observation=torch.randn(4, OBS), batch_size=[4])
    torch.manual_seed(0)
    a = explained(td.clone())
    torch.manual_seed(0)
    b = clone(td.clone())
    torch.testing.assert_close(a.exclude("attribution"), b.exclude("attribution"))
    torch.testing.assert_close(a["attribution"], b["attribution"])
    assert clone._parameters is clone.wrapped._parameters  # still shared after unpickling


def test_shared_trunk_heads_are_attributed_separately():
    ac = shared_trunk_actor_critic()
    explained = thr.Attributed(
        ac,
        IntegratedGradients(n_steps=16),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "value": "state_value"},
    )
    out = explained(TensorDict(observation=torch.randn(6, OBS), batch_size=[6]))
    policy = out["attribution", "policy", "observation"]
    value = out["attribution", "value", "observation"]
    assert not torch.allclose(policy, value)
    zero = ac.get_value_operator()(TensorDict(observation=torch.zeros(6, OBS), batch_size=[6]))
    gap = out["state_value"].squeeze(-1) - zero["state_value"].squeeze(-1)
    torch.testing.assert_close(value.sum(-1), gap, atol=1e-4, rtol=1e-3)


def test_nothing_left_behind_after_an_exception():
    class Boom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fail = False
            self.lin = torch.nn.Linear(OBS, 1)

        def forward(self, x):
            if self.fail and x.requires_grad:
                raise RuntimeError("boom in the attribution pass")
            return self.lin(x)

    net = Boom()
    module = TensorDictModule(net, ["observation"], ["state_value"])
    before = {k: v.clone() for k, v in module.state_dict().items()}
    explained = thr.Attributed(
        module, "ig", inputs=["observation"], targets={"value": "state_value"}
    )
    net.fail = True
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    with pytest.raises(RuntimeError, match="boom"):
        explained(td)
    net.fail = False
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in module.modules()
    )
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())
    assert torch.is_grad_enabled()
    out = explained(td)
    assert out["attribution", "value", "observation"].shape == (3, OBS)
