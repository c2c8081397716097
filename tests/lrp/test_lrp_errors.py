"""Bad input to LRP: one clear line each; composites leave the module exactly as it was."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import tdhook_rl as thr
from tdhook_rl.attribution.lrp import LRP, Composite, Epsilon, EpsilonPlus, Pass, applying


class Doubler(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class Custom(nn.Module):
    """A linear layer, then a custom autograd function called inside its parent's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(Doubler.apply(self.lin(x)))


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.scale


def _explain(net, method, **kw):
    policy = TensorDictModule(net, ["observation"], ["logits"])
    explained = thr.Attributed(
        policy, method, inputs=["observation"], targets={"a": ("logits", 0)}, **kw
    )
    return explained(TensorDict(observation=torch.randn(2, 3), batch_size=[2]))


def test_uncovered_layer_lists_paths_types_and_the_fix():
    net = nn.Sequential(nn.Linear(3, 4), Odd(), nn.Softmax(-1), nn.Linear(4, 2))
    with pytest.raises(
        ValueError,
        match=r"no rule for 2 module\(s\): 'module.1' \(Odd\), 'module.2' \(Softmax\); "
        r"add one to the composite, e.g. Composite\(\{MyLayer: Epsilon\(\)\}\)",
    ):
        _explain(net, LRP())


def test_user_rule_covers_the_layer():
    net = nn.Sequential(nn.Linear(3, 4), Odd(), nn.Linear(4, 2))
    out = _explain(net, LRP(EpsilonPlus(rules={Odd: Pass()})))
    assert out["attribution", "a", "observation"].abs().sum() > 0


def test_composite_naming_a_missing_path():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(
        ValueError,
        match=r"the composite names \['module.9'\], not submodules of TensorDictModule; paths "
        r"as named_modules\(\) spells them, e.g. \['module.0', 'module.1', 'module.2'\]",
    ):
        _explain(net, LRP(Composite({nn.Linear: Epsilon(), "module.9": Pass()})))


def test_position_out_of_range():
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="asks for layer 3 of"):
        _explain(net, LRP(Composite({nn.Linear: Epsilon(), 3: Pass()})))


def test_custom_autograd_function_between_ruled_layers():
    with pytest.raises(
        RuntimeError, match="custom autograd function Doubler between the ruled layers"
    ):
        _explain(Custom(), LRP())
    out = _explain(Custom(), LRP(check_graph=False))  # opted out: the gradient of Doubler
    assert out["attribution", "a", "observation"].shape == (2, 3)


def test_batch_norm_in_training_mode_is_refused():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(
        RuntimeError, match=r"'module.1' \(BatchNorm1d\) runs in training mode.*call .eval\(\)"
    ):
        _explain(net, LRP())


def test_rule_for_the_wrong_layer_type():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(
        TypeError, match="Epsilon applies to Linear and Conv1d/2d/3d layers, not Tanh"
    ):
        _explain(net, LRP(Composite({nn.Linear: Epsilon(), nn.Tanh: Epsilon()})))


def test_not_a_composite():
    with pytest.raises(TypeError, match="composite must be a Composite"):
        LRP({nn.Linear: Epsilon()})  # type: ignore[arg-type]


def _snapshot(net):
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [(n, m.training, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
         for n, m in net.named_modules()],
        [p.requires_grad for p in net.parameters()],
    )  # fmt: skip


@pytest.mark.parametrize("fail", [False, True], ids=["normal", "exception"])
def test_applying_leaves_the_module_bit_for_bit(fail):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    net[1].running_mean.uniform_(-1, 1)
    net[1].train(False)  # the batch norm in eval, the rest in training mode
    before = _snapshot(net)
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="boom") if fail else torch.no_grad():
        with applying(net, EpsilonPlus()):
            y = net(x)
            if fail:
                raise RuntimeError("boom")
    after = _snapshot(net)
    assert before[1] == after[1] and before[2] == after[2]
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert net[0].training and not net[1].training
    assert y.shape == (2, 2)


def test_other_threads_keep_the_plain_gradient():
    """While one thread attributes, another thread running the same module gets gradients."""
    import threading

    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    x = torch.randn(2, 3)
    plain = torch.autograd.functional.jacobian(lambda v: net(v).sum(), x)
    inside, entered, done = {}, threading.Event(), threading.Event()

    def other():
        entered.wait()
        leaf = x.clone().requires_grad_()
        inside["grad"] = torch.autograd.grad(net(leaf).sum(), leaf)[0]
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    leaf = x.clone().requires_grad_()
    with applying(net, EpsilonPlus()):
        entered.set()
        done.wait(10)
        ruled = torch.autograd.grad(net(leaf).sum(), leaf)[0]
    thread.join()
    torch.testing.assert_close(inside["grad"], plain)
    assert not torch.allclose(ruled, plain)  # the attributing thread saw its rules
