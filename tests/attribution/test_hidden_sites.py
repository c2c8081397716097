"""Attribution to hidden sites and to hidden units as targets, every target in one pass,
against captum's layer and neuron methods called once per target."""

from __future__ import annotations

import pickle

import pytest
import torch
from captum.attr import (
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NeuronGradient,
    NeuronIntegratedGradients,
)
from captum.attr import Saliency as CaptumSaliency
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.attribution import InputXGradient, IntegratedGradients, Saliency, SmoothGrad
from tdhook_rl.core.sites import KeySite, ModuleSite
from tdhook_rl.targets import Index, Neuron

from models import N_LOGITS, OBS, actor_critic_mlp, conv_actor_critic

ATOL, RTOL = 1e-5, 1e-4
SHAPES = [(), (6,), (3, 4)]
TARGETS = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)}


def forward_of(module):
    def forward(x: torch.Tensor) -> torch.Tensor:  # (N, 9) -> (N, n_logits)
        return module(TensorDict(observation=x, batch_size=x.shape[:1]))["logits"]

    return forward


def captum_layer(cls, module, layer, x, **kwargs):
    """(n_targets, N, units), captum called once per target."""
    explainer = cls(forward_of(module), layer, **kwargs.pop("init", {}))
    return torch.stack([explainer.attribute(x, target=t, **kwargs) for t in range(N_LOGITS)])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("strategy", ["reverse", "forward", "replicate"])
def test_layer_gradient_and_gradient_x_activation_match_captum(shape, strategy):
    module = actor_critic_mlp()
    layer = module.get_submodule("module.0.module.1")  # the actor's first Tanh
    x = torch.randn(*shape, OBS, generator=torch.Generator().manual_seed(1))
    flat = x.reshape(-1, OBS)
    for method, multiply in ((Saliency(abs=False), False), (InputXGradient(), True)):
        explained = thr.Attributed(
            module, method, inputs=["module.0.module.1"], targets=TARGETS, strategy=strategy
        )
        out = explained(TensorDict(observation=x, batch_size=shape))
        reference = captum_layer(
            LayerGradientXActivation, module, layer, flat, init={"multiply_by_inputs": multiply}
        )
        for i, name in enumerate(TARGETS):
            got = out["attribution", name, "module.0.module.1"]
            assert got.shape == (*shape, 32)
            torch.testing.assert_close(got.reshape(-1, 32), reference[i], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_integrated_gradients_match_captum(shape):
    """The path from the site's activation under the baseline input to its actual one."""
    module = actor_critic_mlp()
    layer = module.get_submodule("module.0.module.3")
    x = torch.randn(*shape, OBS, generator=torch.Generator().manual_seed(2))
    baseline = torch.full((OBS,), 0.3)
    explained = thr.Attributed(
        module,
        IntegratedGradients(n_steps=16, baseline=baseline),
        inputs=["module.0.module.3", "observation"],
        targets=TARGETS,
    )
    out = explained(TensorDict(observation=x, batch_size=shape))
    flat = x.reshape(-1, OBS)
    reference = captum_layer(
        LayerIntegratedGradients,
        module,
        layer,
        flat,
        baselines=baseline.expand_as(flat),
        n_steps=16,
    )
    for i, name in enumerate(TARGETS):
        got = out["attribution", name, "module.0.module.3"].reshape(-1, 32)
        torch.testing.assert_close(got, reference[i], atol=ATOL, rtol=RTOL)
        # completeness at the site: the attributions sum to f(x) - f(baseline)
        assert out["attribution", name, "completeness_delta"].shape == shape


def test_neuron_targets_match_captum_beside_the_heads():
    """Units of the critic's second layer as targets, next to the logits, in one pass."""
    module = actor_critic_mlp()
    layer = module.get_submodule("module.1.module.3")
    x = torch.randn(7, OBS, generator=torch.Generator().manual_seed(3))
    units = [0, 5, 17]
    targets = {**TARGETS, **{f"unit {u}": Neuron("module.1.module.3", u) for u in units}}
    targets["layer sum"] = Neuron("module.1.module.3")
    for method, captum_cls, kwargs in (
        (Saliency(abs=False), NeuronGradient, {}),
        (IntegratedGradients(n_steps=12), NeuronIntegratedGradients, {"n_steps": 12}),
    ):
        explained = thr.Attributed(module, method, inputs=["observation"], targets=targets)
        out = explained(TensorDict(observation=x, batch_size=[7]))

        def critic(obs: torch.Tensor) -> torch.Tensor:
            return module(TensorDict(observation=obs, batch_size=obs.shape[:1]))["state_value"]

        explainer = captum_cls(critic, layer)
        for u in units:
            expected = explainer.attribute(x, neuron_selector=u, **kwargs)
            got = out["attribution", f"unit {u}", "observation"]
            torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
        by_hand = sum(out["attribution", f"unit {u}", "observation"] for u in units)
        assert by_hand.shape == (7, OBS)
        # the sum over every unit: its gradient is the sum of the units' gradients
        if isinstance(method, Saliency):
            every = torch.stack([explainer.attribute(x, neuron_selector=u) for u in range(32)]).sum(
                0
            )
            torch.testing.assert_close(
                out["attribution", "layer sum", "observation"], every, atol=1e-4, rtol=RTOL
            )


def test_conv_channels_and_key_sites():
    """A conv trunk's activation [C, H, W] keeps its shape; a key a sub-module writes is a
    site too (KeySite), attributed in the same pass as a module site."""
    module = conv_actor_critic()
    board = torch.randn(5, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    targets = {"move0": Index("logits", 0), "win": "win"}
    explained = thr.Attributed(
        module, Saliency(abs=False), inputs=["module.conv.1", "board"], targets=targets
    )
    out = explained(TensorDict(board=board, batch_size=[5]))
    layer = module.get_submodule("module.conv.1")
    explainer = LayerGradientXActivation(
        lambda b: module(TensorDict(board=b, batch_size=b.shape[:1]))["logits"],
        layer,
        multiply_by_inputs=False,
    )
    expected = explainer.attribute(board, target=0)
    torch.testing.assert_close(out["attribution", "move0", "module.conv.1"], expected)
    assert out["attribution", "win", "module.conv.1"].shape == (5, 4, 5, 5)

    seq = actor_critic_mlp()  # a written key inside a sequence: the actor's logits
    keyed = thr.Attributed(
        seq, Saliency(abs=False), inputs=[KeySite("logits")], targets={"l0": ("logits", 0)}
    )
    got = keyed(TensorDict(observation=torch.randn(4, OBS), batch_size=[4]))
    onehot = torch.zeros(4, N_LOGITS)
    onehot[:, 0] = 1
    torch.testing.assert_close(got["attribution", "l0", "logits"], onehot)


def test_hidden_sites_in_a_rollout_leave_actions_and_module_alone():
    from models import PointMassEnv, gaussian_actor

    actor = gaussian_actor(action_dim=1)
    site = next(n for n, m in actor.named_modules() if isinstance(m, torch.nn.Tanh))
    explained = thr.Attributed(
        actor, SmoothGrad(n_samples=4), inputs=[site], targets={"loc": thr.targets.ActionLoc()}
    )
    env = PointMassEnv((3,))
    torch.manual_seed(0), env.set_seed(0)
    plain = env.rollout(5, actor)
    torch.manual_seed(0), env.set_seed(0)
    rollout = env.rollout(5, explained)
    torch.testing.assert_close(rollout["action"], plain["action"])
    assert rollout["attribution", "loc", site].shape[:2] == (3, 5)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in actor.modules())
    pickle.loads(pickle.dumps(explained))  # ships to collector workers


def test_bad_hidden_sites_are_named():
    module = actor_critic_mlp()
    with pytest.raises(ValueError, match="neither an entry the module reads"):
        thr.Attributed(module, "saliency", inputs=["module.9"], targets=TARGETS)
    never = thr.Attributed(
        module, "saliency", inputs=[ModuleSite("module.0.module.1")], targets=TARGETS
    )
    td = TensorDict(observation=torch.randn(2, OBS), batch_size=[2])
    assert never(td)["attribution", "logit0", "module.0.module.1"].shape == (2, 32)
    with pytest.raises(IndexError, match=r"out of range.*module\.1\.module\.3"):
        thr.Attributed(
            module,
            "saliency",
            inputs=["observation"],
            targets={"u": Neuron("module.1.module.3", 99)},
        )(td)


@pytest.mark.parametrize("shape", [(), (6,)], ids=str)  # nn.Conv2d takes one batch dim
def test_gradcam_matches_captum_for_every_target(shape):
    from captum.attr import LayerAttribution, LayerGradCam

    from tdhook_rl.attribution import GradCAM

    module = conv_actor_critic()
    board = torch.randn(*shape, 3, 5, 5, generator=torch.Generator().manual_seed(5))
    targets = {f"move{i}": Index("logits", i) for i in range(3)}
    site = "module.conv.3"  # the Softplus after the second conv: [4, 3, 3]
    out = thr.Attributed(module, GradCAM(), inputs=[site], targets=targets)(
        TensorDict(board=board, batch_size=shape)
    )
    up = thr.Attributed(module, GradCAM(size=(5, 5)), inputs=[site], targets=targets)(
        TensorDict(board=board, batch_size=shape)
    )
    flat = board.reshape(-1, 3, 5, 5)
    explainer = LayerGradCam(
        lambda b: module(TensorDict(board=b, batch_size=b.shape[:1]))["logits"],
        module.get_submodule(site),
    )
    for i, name in enumerate(targets):
        expected = explainer.attribute(flat, target=i, relu_attributions=True)  # (N, 1, 3, 3)
        got = out["attribution", name, site]
        assert got.shape == (*shape, 3, 3)
        torch.testing.assert_close(got.reshape(-1, 1, 3, 3), expected, atol=ATOL, rtol=RTOL)
        upsampled = LayerAttribution.interpolate(expected, (5, 5), "bilinear")
        torch.testing.assert_close(
            up["attribution", name, site].reshape(-1, 1, 5, 5), upsampled, atol=ATOL, rtol=RTOL
        )
    with pytest.raises(ValueError, match=r"GradCAM needs a \[\*batch, C, H, W\]"):
        thr.Attributed(module, GradCAM(), inputs=["module.conv.4"], targets=targets)(
            TensorDict(board=board.reshape(-1, 3, 5, 5), batch_size=[flat.shape[0]])
        )


@pytest.mark.parametrize("method", [Saliency(abs=False), IntegratedGradients(n_steps=8)])
def test_an_input_and_the_layers_it_feeds_each_get_what_they_get_alone(method):
    """Replacing a site cuts the paths through it: the observation, and a layer upstream of
    another, are attributed in passes of their own, not jointly (which gave them zero)."""
    module = actor_critic_mlp()
    h1, h2 = "module.0.module.1", "module.0.module.3"
    x = torch.randn(5, OBS, generator=torch.Generator().manual_seed(4))
    td = TensorDict(observation=x, batch_size=[5])
    together = thr.Attributed(module, method, inputs=["observation", h1, h2], targets=TARGETS)(
        td.clone()
    )
    for name in ("observation", h1, h2):
        alone = thr.Attributed(module, method, inputs=[name], targets=TARGETS)(td.clone())
        for target in TARGETS:
            got = together["attribution", target, name]
            assert got.abs().sum() > 0
            torch.testing.assert_close(got, alone["attribution", target, name])
    if isinstance(method, Saliency):  # the observation's is captum's input saliency
        for i, target in enumerate(TARGETS):
            reference = CaptumSaliency(forward_of(module)).attribute(x, target=i, abs=False)
            torch.testing.assert_close(together["attribution", target, "observation"], reference)
