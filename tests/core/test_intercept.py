"""The one interception mechanism: replace, observe, nest, clean up, hidden-site gradients."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from tdhook_rl.core.intercept import Interception, intercepting


def clean(module: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__
        for m in module.modules()
    )


def test_observers_see_the_value_after_every_replacement_in_either_order():
    lin = nn.Linear(2, 2)
    x = torch.ones(1, 2)
    for observer_first in (True, False):
        seen: list[torch.Tensor] = []
        observe = Interception(lin, seen.append, observe=True)
        double = Interception(lin, lambda v: 2 * v)
        items = [observe, double] if observer_first else [double, observe]
        with intercepting(items):
            out = lin(x)
        torch.testing.assert_close(seen[0], out)
        torch.testing.assert_close(out, 2 * (x @ lin.weight.T + lin.bias))
    assert clean(lin)


def test_replacements_apply_in_the_order_entered_and_nest():
    lin = nn.Linear(2, 2)
    x = torch.ones(1, 2)
    base = lin(x)
    with intercepting([Interception(lin, lambda v: v + 1)]):
        with intercepting([Interception(lin, lambda v: 3 * v)]):
            torch.testing.assert_close(lin(x), 3 * (base + 1))
        torch.testing.assert_close(lin(x), base + 1)  # the inner block is gone
    torch.testing.assert_close(lin(x), base)
    assert clean(lin)


def test_input_site_replaces_the_first_positional_argument():
    lin = nn.Linear(2, 1)
    with intercepting([Interception(lin, torch.zeros_like, io="input")]):
        out = lin(torch.randn(3, 2))
    torch.testing.assert_close(out, lin.bias.expand(3, 1))
    assert clean(lin)


def test_nothing_left_after_an_exception_and_the_module_pickles():
    lin = nn.Linear(2, 2)

    def boom(value: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with intercepting([Interception(lin, boom), Interception(lin, print, io="input")]):
            lin(torch.ones(1, 2))
    assert clean(lin)
    pickle.dumps(lin)
    with pytest.raises(ValueError, match="io must be"):
        Interception(lin, print, io="grad")  # type: ignore[arg-type]


def test_hidden_site_gradient_through_an_added_zero():
    """What hidden-site attribution needs: add a zero that requires grad at a site, read its
    gradient; it equals d out / d h computed by hand."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    x = torch.randn(5, 3)
    zero = torch.zeros(5, 4, requires_grad=True)
    with intercepting([Interception(net[1], lambda h: h + zero)]):
        net(x).sum().backward()
    h = net[1](net[0](x)).detach().requires_grad_()
    net[2](h).sum().backward()
    torch.testing.assert_close(zero.grad, h.grad)
    assert clean(net)
