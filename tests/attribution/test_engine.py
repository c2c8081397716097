"""The gradient engine owns its strategy (auto choice, forward-mode fallback) and handles empty
batches."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.attribution import (
    GradientEngine,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from tdhook_rl.targets import ActionLogProb, Index, as_targets

from models import OBS, actor_critic_mlp, gaussian_actor

MANY = {f"x{i}": Index("logits", i % 4) for i in range(12)} | {"value": "state_value"}
METHODS = {
    "saliency": lambda: Saliency(abs=False),
    "input_x_gradient": InputXGradient,
    "ig": lambda: IntegratedGradients(n_steps=4),
    "smoothgrad": lambda: SmoothGrad(n_samples=3),
}


def engine_on(module, targets, strategy, batch):
    engine = GradientEngine(module, as_targets(targets, module), strategy)
    return engine.at(TensorDict(batch_size=batch), TensorDict(batch_size=batch))


def test_auto_chooses_by_counting_features_and_targets():
    module = actor_critic_mlp()
    x = {"observation": torch.randn(3, OBS)}
    few = engine_on(module, {"v": "state_value"}, "auto", [3])
    assert few.mode(x) == "reverse"  # 9 features, 1 target
    many = engine_on(module, MANY, "auto", [3])
    assert many.mode(x) == "forward"  # 9 features, 13 targets
    assert many.mode({"observation": torch.randn(7, 3, OBS)}, lead=(7,)) == "forward"
    assert engine_on(module, MANY, "replicate", [3]).mode(x) == "replicate"


def test_the_forward_mode_fallback_is_remembered_by_every_engine_made_from_one():
    """TanhNormal's safe tanh has no jvp: the first forward attempt falls back, and the
    engines made by at() and expand() take reverse mode from then on."""
    actor = gaussian_actor()
    targets = {"policy": ActionLogProb()} | {f"x{i}": Index("loc", 0) for i in range(9)}
    td = actor(TensorDict(observation=torch.randn(4, OBS), batch_size=[4]))
    engine = GradientEngine(actor, as_targets(targets, actor), "auto")
    batch = engine.at(TensorDict(batch_size=[4]), td.select("action"))
    x = {"observation": td["observation"]}
    assert batch.mode(x) == "forward" and engine.forward_supported is None
    grads = batch.gradients(x)["observation"]
    assert engine.forward_supported is False
    assert batch.expand(2).mode({"observation": x["observation"].expand(2, 4, OBS)}, (2,)) == (
        "reverse"
    )
    reverse = GradientEngine(actor, as_targets(targets, actor), "reverse").at(
        TensorDict(batch_size=[4]), td.select("action")
    )
    torch.testing.assert_close(grads, reverse.gradients(x)["observation"])


def test_a_method_with_several_passes_falls_back_once_inside_the_engine():
    """Chunked IG calls gradients() several times; Attributed no longer catches anything."""
    targets = {"policy": ActionLogProb()} | {f"x{i}": Index("loc", 0) for i in range(9)}
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    got = {}
    for strategy in ("auto", "reverse"):
        explained = thr.Attributed(
            gaussian_actor(),
            IntegratedGradients(n_steps=6, chunk_size=2),
            inputs=["observation"],
            targets=targets,
            strategy=strategy,
        )
        torch.manual_seed(0)
        got[strategy] = explained(td.clone())["attribution"]
    assert not hasattr(thr.Attributed, "_choose_strategy")  # the engine chooses, once
    assert not hasattr(thr.Attributed, "_forward_ok")
    torch.testing.assert_close(got["auto"], got["reverse"])


def test_a_bad_strategy_is_refused_by_the_engine():
    with pytest.raises(ValueError, match=r"strategy must be one of \['reverse', 'forward'"):
        GradientEngine(actor_critic_mlp(), {}, "vmap")  # type: ignore[arg-type]


def test_an_engine_without_a_batch_says_how_to_give_one():
    engine = GradientEngine(actor_critic_mlp(), as_targets({"v": "state_value"}))
    with pytest.raises(RuntimeError, match=r"engine.at\(context, reference\)"):
        engine.gradients({"observation": torch.randn(2, OBS)})


@pytest.mark.parametrize("batch", [(0,), (3, 0)], ids=["0", "3x0"])
@pytest.mark.parametrize("strategy", ["reverse", "forward", "replicate", "auto"])
@pytest.mark.parametrize("method", list(METHODS))
def test_an_empty_batch_gives_empty_attributions(batch, strategy, method):
    explained = thr.Attributed(
        actor_critic_mlp(),
        METHODS[method](),
        inputs=["observation"],
        targets=MANY,
        strategy=strategy,
    )
    raw = actor_critic_mlp()(TensorDict(observation=torch.randn(*batch, OBS), batch_size=batch))
    out = explained(TensorDict(observation=torch.randn(*batch, OBS), batch_size=batch))
    assert out["state_value"].shape == raw["state_value"].shape
    for name in MANY:
        assert out["attribution", name, "observation"].shape == (*batch, OBS)
        if method == "ig":
            assert out["attribution", name, "completeness_delta"].shape == batch


def test_an_input_no_target_reads_gets_zero_attributions_of_its_shape():
    """Reverse mode with several targets: autograd returns an unused input's zeros without
    the batched target dimension; the engine gives them the shape of every other input's."""
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule

    import tdhook_rl as thr

    class UsesFirst(torch.nn.Module):
        def forward(self, x, unused):
            return x @ torch.ones(3, 2) + 0 * unused.sum(-1, keepdim=True).detach()

    net = TensorDictModule(UsesFirst(), ["x", "unused"], ["out"])
    explained = thr.Attributed(
        net,
        "saliency",
        inputs=["x", "unused"],
        targets={"a": ("out", 0), "b": ("out", 1)},
        strategy="reverse",
    )
    td = explained(TensorDict(x=torch.randn(4, 3), unused=torch.randn(4, 5), batch_size=[4]))
    for head in ("a", "b"):
        assert td["attribution", head, "unused"].shape == (4, 5)
        assert bool((td["attribution", head, "unused"] == 0).all())
        assert torch.allclose(td["attribution", head, "x"], torch.ones(4, 3))
