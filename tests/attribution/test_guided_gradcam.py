"""Guided backpropagation and Guided GradCAM, every target in one batched backward per pass,
against captum's GuidedBackprop and GuidedGradCam called once per target; the guided ReLU
leaves the module and other threads alone."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam
from connect_four_shaped import MOVES, Head, board_actor_critic, boards
from tensordict import TensorDict
from torch import nn

import tdhook_rl as thr
from tdhook_rl.attribution import GuidedBackprop, GuidedGradCAM, resolve_method
from tdhook_rl.attribution.guided import guided_relus
from tdhook_rl.targets import Index

RTOL = 1e-4
TARGETS = {**{f"move{i}": Index("logits", i) for i in range(MOVES)}, "value": "state_value"}
HEADS = [*[("logits", i) for i in range(MOVES)], ("state_value", 0)]


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():  # captum warns that it sets requires_grad and hooks
        warnings.simplefilter("ignore", UserWarning)
        yield


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert expected.abs().max() > 0  # a test that can fail
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, atol=1e-5 * scale, rtol=RTOL)


def captum_per_target(module, make, flat, **kwargs):
    """``(n_targets, N, ...)``: ``make(head)`` for each head, called once per target."""
    results = []
    for key, i in HEADS:
        results.append(make(Head(module, key)).attribute(flat, target=i, **kwargs))
    return torch.stack(results)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("strategy", ["auto", "reverse", "replicate"])
def test_guided_backprop_matches_captum(shape, strategy):
    module = board_actor_critic()
    x = boards(*shape, seed=1)
    out = thr.Attributed(
        module, GuidedBackprop(), inputs=["observation"], targets=TARGETS, strategy=strategy
    )(TensorDict(observation=x, batch_size=shape))
    flat = x.reshape(-1, *x.shape[len(shape) :])
    expected = captum_per_target(module, CaptumGuidedBackprop, flat)
    plain = thr.Attributed(
        module, "saliency", inputs=["observation"], targets=TARGETS, strategy=strategy
    )
    ordinary = plain(TensorDict(observation=x, batch_size=shape))
    for i, name in enumerate(TARGETS):
        got = out["attribution", name, "observation"]
        assert got.shape == x.shape
        close(got.reshape(flat.shape), expected[i])
    # the guided rule changes the gradient (saliency is |gradient|): not a plain backward
    differs = ordinary["attribution", "move0", "observation"]
    assert not torch.allclose(differs, out["attribution", "move0", "observation"].abs())


@pytest.mark.parametrize("shape", [(), (5,)], ids=str)  # the site sees the convs' batch
@pytest.mark.parametrize("site", ["module.trunk.conv.1", "module.trunk.conv.2"])
@pytest.mark.parametrize("strategy", ["auto", "replicate"])
def test_guided_gradcam_matches_captum(shape, site, strategy):
    module = board_actor_critic()
    x = boards(*shape, seed=2)
    out = thr.Attributed(
        module, GuidedGradCAM(site), inputs=["observation"], targets=TARGETS, strategy=strategy
    )(TensorDict(observation=x, batch_size=shape))
    flat = x.reshape(-1, *x.shape[len(shape) :])
    layer = module.get_submodule(site)
    expected = captum_per_target(module, lambda head: GuidedGradCam(head, layer), flat)
    for i, name in enumerate(TARGETS):
        got = out["attribution", name, "observation"]
        assert got.shape == x.shape
        close(got.reshape(flat.shape), expected[i])


def test_bilinear_upsampling_is_passed_on():
    module = board_actor_critic()
    x = boards(4, seed=3)
    site = "module.trunk.conv.2"  # [8, 4, 5]: upsampled to 6 x 7
    out = thr.Attributed(
        module, GuidedGradCAM(site, "bilinear"), inputs=["observation"], targets=TARGETS
    )(TensorDict(observation=x, batch_size=[4]))
    layer = module.get_submodule(site)
    expected = captum_per_target(
        module, lambda head: GuidedGradCam(head, layer), x, interpolate_mode="bilinear"
    )
    for i, name in enumerate(TARGETS):
        close(out["attribution", name, "observation"], expected[i])


@pytest.fixture(scope="module")
def connect_four():
    from tdhook_rl.agents.connect_four import load
    from tdhook_rl.envs.connect_four import ConnectFourEnv

    env = ConnectFourEnv(batch_size=[6])
    env.set_seed(0)
    positions = env.rollout(7, break_when_any_done=False)[:, -1]["next"]
    return load(), positions.select("observation", "action_mask")


def test_the_shipped_connect_four_agent_against_captum(connect_four):
    """Its trunk's ReLUs are nn.ReLU modules after a functional relu (left plain, as in
    captum); the conv site is the 4x4 convolution's output [64, 3, 4]."""
    agent, td = connect_four
    site = "module.0.module.conv"

    class Board(nn.Module):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.agent, self.key = agent, key

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = td["action_mask"]
            return self.agent(TensorDict(observation=x, action_mask=mask, batch_size=[6]))[self.key]

    guided = thr.Attributed(agent, GuidedBackprop(), inputs=["observation"], targets=TARGETS)
    cam = thr.Attributed(agent, GuidedGradCAM(site), inputs=["observation"], targets=TARGETS)
    got_guided, got_cam = guided(td.clone()), cam(td.clone())
    layer = agent.get_submodule(site)
    for (key, i), name in zip(HEADS, TARGETS, strict=True):
        obs = td["observation"]
        expected = CaptumGuidedBackprop(Board(key)).attribute(obs, target=i)
        close(got_guided["attribution", name, "observation"], expected)
        expected = GuidedGradCam(Board(key), layer).attribute(obs, target=i)
        close(got_cam["attribution", name, "observation"], expected)


def test_guided_relus_leave_the_module_unchanged_after_an_exception():
    module = board_actor_critic()
    relus = [m for m in module.modules() if isinstance(m, nn.ReLU)]
    td = TensorDict(observation=boards(3, seed=4), batch_size=[3])

    def broken(out):
        raise RuntimeError("target failed")

    explained = thr.Attributed(
        module, GuidedBackprop(), inputs=["observation"], targets={"bad": broken}
    )
    with pytest.raises(RuntimeError, match="target failed"):
        explained(td.clone())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
    # plain gradients again: the guided rule did not stay behind
    x = td["observation"].clone().requires_grad_()
    logits = module(TensorDict(observation=x, batch_size=[3]))["logits"]
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    with guided_relus(module):
        x2 = td["observation"].clone().requires_grad_()
        guided_logits = module(TensorDict(observation=x2, batch_size=[3]))["logits"]
        (guided,) = torch.autograd.grad(guided_logits[:, 0].sum(), x2)
    assert relus and not torch.allclose(grad, guided)
    x3 = td["observation"].clone().requires_grad_()
    after = module(TensorDict(observation=x3, batch_size=[3]))["logits"]
    torch.testing.assert_close(torch.autograd.grad(after[:, 0].sum(), x3)[0], grad)


def test_guided_relus_are_one_threads_own():
    """While one thread is inside guided_relus, another thread's backward through the same
    module is the plain one."""
    module = board_actor_critic()
    x = boards(3, seed=5)

    def gradient() -> torch.Tensor:
        leaf = x.clone().requires_grad_()
        logits = module(TensorDict(observation=leaf, batch_size=[3]))["logits"]
        return torch.autograd.grad(logits[:, 2].sum(), leaf)[0]

    plain = gradient()
    with guided_relus(module):
        guided = gradient()
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, torch.Tensor] = {}

    def guided_thread() -> None:
        with guided_relus(module):
            inside.set()
            release.wait(10)
            seen["guided"] = gradient()

    worker = threading.Thread(target=guided_thread)
    worker.start()
    assert inside.wait(10)
    seen["plain"] = gradient()  # the other thread holds its interceptions now
    release.set()
    worker.join(10)
    torch.testing.assert_close(seen["plain"], plain)
    torch.testing.assert_close(seen["guided"], guided)
    assert not torch.allclose(plain, guided)
    assert not any(m._forward_hooks for m in module.modules())


def test_bad_arguments_are_named():
    module = board_actor_critic()
    td = TensorDict(observation=boards(2, seed=6), batch_size=[2])
    assert isinstance(resolve_method("guided_backprop"), GuidedBackprop)
    with pytest.raises(ValueError, match=r"strategy='forward'"):
        thr.Attributed(
            module, GuidedBackprop(), inputs=["observation"], targets=TARGETS, strategy="forward"
        )(td.clone())
    with pytest.raises(ValueError, match=r"'module.trunk.conv.1' is a hidden site"):
        thr.Attributed(module, GuidedBackprop(), inputs=["module.trunk.conv.1"], targets=TARGETS)(
            td.clone()
        )
    with pytest.raises(ValueError, match=r"GuidedGradCAM\(.*\) names 4 sites"):
        thr.Attributed(
            module, GuidedGradCAM(thr.of_type(nn.ReLU)), inputs=["observation"], targets=TARGETS
        )(td.clone())
    with pytest.raises(ValueError, match=r"GradCAM needs a \[\*batch, C, H, W\]"):
        thr.Attributed(
            module, GuidedGradCAM("module.trunk"), inputs=["observation"], targets=TARGETS
        )(td.clone())
    flat = TensorDict(observation=torch.randn(2, 9), batch_size=[2])
    mlp = thr.Attributed(
        _mlp(), GuidedGradCAM("module.1"), inputs=["observation"], targets={"a": ("logits", 0)}
    )
    with pytest.raises(ValueError, match=r"needs image-like .* 'observation'"):
        mlp(flat)


def _mlp():
    from tensordict.nn import TensorDictModule

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(9, 4), nn.ReLU(), nn.Linear(4, 2))
    return TensorDictModule(net, ["observation"], ["logits"])
