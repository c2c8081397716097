"""Every LRP rule against zennit 0.5.1 on random MLP and conv nets, one target per call."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit_loader import load_zennit

from tdhook_rl.attribution import lrp as ours

zennit = load_zennit()
zr = zennit.rules


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 4))


def _conv() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(5, 4, 3, stride=2),
        nn.ELU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    )


def _conv1d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 7, 3)
    )


NETS = {"mlp": (_mlp, (6,)), "conv2d": (_conv, (3, 7, 7)), "conv1d": (_conv1d, (2, 7))}
LOW, HIGH = -2.0, 2.5
RULES = {
    "epsilon": (lambda: ours.Epsilon(1e-3), lambda: zr.Epsilon(1e-3)),
    "epsilon_zero_bias": (
        lambda: ours.Epsilon(0.1, zero_params="bias"),
        lambda: zr.Epsilon(0.1, zero_params="bias"),
    ),
    "gamma": (lambda: ours.Gamma(0.25), lambda: zr.Gamma(0.25)),
    "zplus": (ours.ZPlus, zr.ZPlus),
    "alpha2beta1": (lambda: ours.AlphaBeta(2.0, 1.0), lambda: zr.AlphaBeta(2.0, 1.0)),
    "alpha1beta0": (lambda: ours.AlphaBeta(1.0, 0.0), lambda: zr.AlphaBeta(1.0, 0.0)),
    "zbox": (lambda: ours.ZBox(LOW, HIGH), lambda: zr.ZBox(LOW, HIGH)),
    "flat": (ours.Flat, zr.Flat),
    "wsquare": (ours.WSquare, zr.WSquare),
}
ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.ELU, nn.SiLU)


def _zennit_relevance(net, x, rule, target):
    composite = zennit.composites.LayerMapComposite(
        [(ACTIVATIONS, zr.Pass()), ((nn.Linear, nn.Conv1d, nn.Conv2d), rule)]
    )
    onehot = torch.zeros(net(x).shape)
    onehot[:, target] = 1.0
    with zennit.attribution.Gradient(net, composite) as attributor:
        _, relevance = attributor(x, attr_output=lambda out: out * onehot)
    return relevance


def _our_relevance(net, x, rule, target):
    assignments = [
        (m, ours.Pass() if isinstance(m, ACTIVATIONS) else rule)
        for m in net
        if isinstance(m, (*ACTIVATIONS, nn.Linear, nn.Conv1d, nn.Conv2d))
    ]
    leaf = x.clone().requires_grad_()
    with ours.ruling(assignments):
        out = net(leaf)
    (grad,) = torch.autograd.grad(out[:, target].sum(), leaf)
    return grad * out[:, target].detach().reshape(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("rule_name", list(RULES))
def test_rule_matches_zennit(net_name, rule_name):
    make, shape = NETS[net_name]
    net = make().eval()
    x = (
        (torch.rand(5, *shape) * (HIGH - LOW) + LOW)
        if rule_name == "zbox"
        else torch.randn(5, *shape)
    )
    ours_rule, their_rule = RULES[rule_name]
    for target in range(2):
        expected = _zennit_relevance(net, x, their_rule(), target)
        actual = _our_relevance(net, x, ours_rule(), target)
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
        assert actual.abs().sum() > 0


def test_pass_differs_from_the_gradient_through_tanh():
    """The test can fail: without Pass on Tanh the relevance is the gradient-weighted one."""
    net = _mlp().eval()
    x = torch.randn(5, 6)
    expected = _zennit_relevance(net, x, zr.Epsilon(1e-3), 0)
    leaf = x.clone().requires_grad_()
    with ours.ruling([(m, ours.Epsilon(1e-3)) for m in net if isinstance(m, nn.Linear)]):
        out = net(leaf)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), leaf)
    assert not torch.allclose(grad * out[:, :1].detach(), expected, atol=1e-4)
