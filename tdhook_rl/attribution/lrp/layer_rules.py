"""The rules for linear layers (``Linear``, ``Conv1d/2d/3d``) and ``LayerNorm``, following
zennit 0.5.1's definitions (``z`` is the layer's output, ``x+``/``x-`` and ``W+``/``W-`` the
positive/negative parts, ``stab(z) = z + eps sign(z)`` with ``sign(0) = 1``, ``R`` the
relevance of the output). Each is computed in closed form with plain torch ops (the
transposed map ``W^T g`` of a convolution by ``torch.nn.grad.conv*d_input``), so it runs
inside the batched backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import grad as nn_grad

from tdhook_rl.attribution.lrp.rules import Rule

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "LayerNormRule",
    "Stabilizer",
    "WSquare",
    "ZBox",
    "ZPlus",
]

Stabilizer = float | Callable[[Tensor], Tensor]


def _stab(fn: Stabilizer) -> Callable[[Tensor], Tensor]:
    if isinstance(fn, float | int):
        eps = float(fn)
        return lambda z: z + torch.where(z >= 0, eps, -eps)  # sign(0) = +1, as zennit
    if callable(fn):
        return fn
    raise TypeError(f"a stabilizer is a float or a callable tensor -> tensor, got {fn!r}")


def _zeros(zero_params: str | Sequence[str] | None) -> frozenset[str]:
    if zero_params is None:
        return frozenset()
    return frozenset([zero_params] if isinstance(zero_params, str) else zero_params)


class _Layer:
    """A linear layer's map, with substituted parameters: ``forward(x, w, b)`` and the
    transposed map ``transpose(x, w, g) = W^T g`` (shaped like ``x``)."""

    def __init__(self, module: nn.Module, rule: Rule) -> None:
        if isinstance(module, nn.Linear):
            self.kind = "linear"
        elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            self.kind = "conv"
        else:
            raise TypeError(
                f"{type(rule).__name__} applies to Linear and Conv1d/2d/3d layers, not "
                f"{type(module).__name__}; give that module another rule"
            )
        self.module = module
        self.weight: Tensor = module.weight.detach()
        self.bias: Tensor | None = None if module.bias is None else module.bias.detach()

    def params(
        self, fn: Callable[[Tensor], Tensor], zero: frozenset[str]
    ) -> tuple[Tensor, Tensor | None]:
        """The parameters modified by ``fn``, those named in ``zero`` set to zero."""
        w = torch.zeros_like(self.weight) if "weight" in zero else fn(self.weight)
        b = None if self.bias is None or "bias" in zero else fn(self.bias)
        return w, b

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if self.kind == "linear":
            return F.linear(x, w, b)
        return self.module._conv_forward(x, w, b)  # type: ignore[operator]

    def transpose(self, x: Tensor, w: Tensor, g: Tensor) -> Tensor:
        if self.kind == "linear":
            return g @ w
        m: Any = self.module
        dims = w.ndim - 2
        if m.padding_mode == "zeros" and not isinstance(m.padding, str) and x.ndim == dims + 2:
            grad = getattr(nn_grad, f"conv{dims}d_input")
            return grad(x.shape, w, g, m.stride, m.padding, m.dilation, m.groups)
        vjp = torch.func.vjp(lambda x_: m._conv_forward(x_, w, None), x)[1]
        return vjp(g)[0]


def _pos(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _neg(t: Tensor) -> Tensor:
    return t.clamp(max=0)


class Epsilon(Rule):
    """LRP-epsilon: ``R_in = x * W^T (R / stab(z))`` (``epsilon=0``: LRP-0).

    Args:
        epsilon: the stabilizer, a float (added with the sign of ``z``) or a callable.
        zero_params: parameter names (``"weight"``, ``"bias"``) set to zero in the rule.

    Examples:
        >>> lin = nn.Linear(3, 1, bias=False)
        >>> x = torch.ones(3)
        >>> r = Epsilon(0.0).relevance(lin, [x], [lin(x)], [lin(x).detach()])[0]
        >>> torch.allclose(r.sum(), lin(x).sum())
        True
    """

    def __init__(self, epsilon: Stabilizer = 1e-6, zero_params: str | Sequence[str] | None = None):
        self.epsilon, self.zero_params = epsilon, zero_params

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x = _Layer(module, self), inputs[0]
        w, b = layer.params(lambda p: p, _zeros(self.zero_params))
        z = layer.forward(x, w, b)
        s = relevance_out[0] / _stab(self.epsilon)(z)
        return [x * layer.transpose(x, w, s), *[None] * (len(inputs) - 1)]


class Gamma(Rule):
    """Generalised LRP-gamma (Montavon et al. 2019; Andeol et al. 2021): positive outputs
    are explained by the weights ``W + gamma W+`` on ``x+`` and ``W + gamma W-`` on ``x-``,
    negative outputs by the opposite pairing.

    Examples:
        >>> lin = nn.Linear(3, 2)
        >>> x = torch.rand(3)
        >>> Gamma(0.25).relevance(lin, [x], [lin(x)], [torch.ones(2)])[0].shape
        torch.Size([3])
    """

    def __init__(
        self,
        gamma: float = 0.25,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Sequence[str] | None = None,
    ) -> None:
        self.gamma, self.stabilizer, self.zero_params = gamma, stabilizer, zero_params

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x, r = _Layer(module, self), inputs[0], relevance_out[0]
        zero, nobias = _zeros(self.zero_params), _zeros(self.zero_params) | {"bias"}
        g, stab = self.gamma, _stab(self.stabilizer)
        up = (lambda p: p + g * _pos(p)), (lambda p: p + g * _neg(p))
        xp, xn = _pos(x), _neg(x)
        w0, b0 = layer.params(up[0], zero)  # positive outputs: x+ with W + gW+ (and bias)
        w1, _ = layer.params(up[1], nobias)  # ... and x- with W + gW-
        w2, b2 = layer.params(up[1], zero)  # negative outputs: x+ with W + gW-
        w3, _ = layer.params(up[0], nobias)  # ... and x- with W + gW+
        z = layer.forward(x, layer.weight, layer.bias)
        pos = (z > 0).to(r) * r / stab(layer.forward(xp, w0, b0) + layer.forward(xn, w1, None))
        neg = (z < 0).to(r) * r / stab(layer.forward(xp, w2, b2) + layer.forward(xn, w3, None))
        t = layer.transpose
        rel = xp * t(x, w0, pos) + xn * t(x, w1, pos) + xp * t(x, w2, neg) + xn * t(x, w3, neg)
        return [rel, *[None] * (len(inputs) - 1)]


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015): ``alpha`` times the relevance of positive
    contributions minus ``beta`` times that of negative ones (``alpha - beta = 1``).

    Examples:
        >>> AlphaBeta(2.0, 1.0)
        AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-06, zero_params=None)
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 1.0,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Sequence[str] | None = None,
    ) -> None:
        if alpha < 0 or beta < 0 or alpha - beta != 1:
            raise ValueError(
                f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}"
            )
        self.alpha, self.beta, self.stabilizer, self.zero_params = (
            alpha,
            beta,
            stabilizer,
            zero_params,
        )

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x, r = _Layer(module, self), inputs[0], relevance_out[0]
        zero, nobias = _zeros(self.zero_params), _zeros(self.zero_params) | {"bias"}
        stab = _stab(self.stabilizer)
        xp, xn = _pos(x), _neg(x)
        wp, bp = layer.params(_pos, zero)
        wn, bn = layer.params(_neg, zero)
        wp_, _ = layer.params(_pos, nobias)
        wn_, _ = layer.params(_neg, nobias)
        f, t = layer.forward, layer.transpose
        sp = r / stab(f(xp, wp, bp) + f(xn, wn_, None))  # positive contributions
        sn = r / stab(f(xp, wn, bn) + f(xn, wp_, None))  # negative contributions
        rel = self.alpha * (xp * t(x, wp, sp) + xn * t(x, wn_, sp)) - self.beta * (
            xp * t(x, wn, sn) + xn * t(x, wp_, sn)
        )
        return [rel, *[None] * (len(inputs) - 1)]


class ZPlus(Rule):
    """LRP-z+ (alpha=1, beta=0): only positive contributions, negative inputs allowed.

    Examples:
        >>> ZPlus()
        ZPlus(stabilizer=1e-06, zero_params=None)
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Sequence[str] | None = None
    ):
        self.stabilizer, self.zero_params = stabilizer, zero_params

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x, r = _Layer(module, self), inputs[0], relevance_out[0]
        wp, bp = layer.params(_pos, _zeros(self.zero_params))
        wn, _ = layer.params(_neg, _zeros(self.zero_params) | {"bias"})
        xp, xn = _pos(x), _neg(x)
        s = r / _stab(self.stabilizer)(layer.forward(xp, wp, bp) + layer.forward(xn, wn, None))
        rel = xp * layer.transpose(x, wp, s) + xn * layer.transpose(x, wn, s)
        return [rel, *[None] * (len(inputs) - 1)]


class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for inputs bounded by ``low`` and ``high`` (floats or
    tensors broadcast against the input like torch does, e.g. ``(C, 1, 1)``).

    Examples:
        >>> ZBox(low=-1.0, high=1.0)
        ZBox(low=-1.0, high=1.0, stabilizer=1e-06, zero_params=None)
    """

    def __init__(
        self,
        low: float | Tensor,
        high: float | Tensor,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Sequence[str] | None = None,
    ) -> None:
        self.low, self.high, self.stabilizer, self.zero_params = low, high, stabilizer, zero_params

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x, r = _Layer(module, self), inputs[0], relevance_out[0]
        zero = _zeros(self.zero_params)
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device).expand(x.shape)
        high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device).expand(x.shape)
        w, b = layer.params(lambda p: p, zero)
        wp, bp = layer.params(_pos, zero)
        wn, bn = layer.params(_neg, zero)
        f, t = layer.forward, layer.transpose
        s = r / _stab(self.stabilizer)(f(x, w, b) - f(low, wp, bp) - f(high, wn, bn))
        rel = x * t(x, w, s) - low * t(x, wp, s) - high * t(x, wn, s)
        return [rel, *[None] * (len(inputs) - 1)]


class WSquare(Rule):
    """LRP-w^2 (Montavon et al. 2017): relevance spread in proportion to squared weights.

    Examples:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> _ = lin.weight.data.copy_(torch.tensor([[1.0, -2.0]]))
        >>> r = WSquare().relevance(lin, [torch.ones(2)], [lin(torch.ones(2))], [torch.ones(1)])
        >>> [round(v, 4) for v in r[0].tolist()]  # in proportion to w^2: 1/5 and 4/5
        [0.2, 0.8]
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Sequence[str] | None = None
    ):
        self.stabilizer, self.zero_params = stabilizer, zero_params

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x = _Layer(module, self), inputs[0]
        w, b = layer.params(lambda p: p**2, _zeros(self.zero_params))
        s = relevance_out[0] / _stab(self.stabilizer)(layer.forward(torch.ones_like(x), w, b))
        return [layer.transpose(x, w, s), *[None] * (len(inputs) - 1)]


class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): relevance spread uniformly over each output's
    receptive field (w^2 with every weight one, no bias).

    Examples:
        >>> lin = nn.Linear(4, 1)
        >>> r = Flat().relevance(lin, [torch.rand(4)], [torch.rand(1)], [torch.ones(1)])[0]
        >>> [round(v, 4) for v in r.tolist()]
        [0.25, 0.25, 0.25, 0.25]
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Sequence[str] | None = None
    ):
        self.stabilizer, self.zero_params = stabilizer, zero_params

    def relevance(self, module, inputs, outputs, relevance_out):
        layer, x = _Layer(module, self), inputs[0]
        w, _ = layer.params(torch.ones_like, _zeros(self.zero_params) | {"bias"})
        s = relevance_out[0] / _stab(self.stabilizer)(layer.forward(torch.ones_like(x), w, None))
        return [layer.transpose(x, w, s), *[None] * (len(inputs) - 1)]


class LayerNormRule(Rule):
    """The LN-rule of Ali et al. (2022) for ``nn.LayerNorm``: the standard deviation is held
    constant, so ``y = gamma (x - mean(x)) / std + beta`` is linear in ``x``; relevance then
    flows by the epsilon rule through that map: ``R_in = x * J^T (R / stab(y))``.

    Examples:
        >>> ln = nn.LayerNorm(4, elementwise_affine=False)
        >>> x, r_out = torch.tensor([1.0, 2.0, 4.0, 7.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> r = LayerNormRule(0.0).relevance(ln, [x], [ln(x)], [r_out])[0]
        >>> round(r.sum().item(), 4)  # conserved: the relevance of the outputs sums to 10
        10.0
    """

    def __init__(self, epsilon: Stabilizer = 1e-6) -> None:
        self.epsilon = epsilon

    def relevance(self, module, inputs, outputs, relevance_out):
        if not isinstance(module, nn.LayerNorm):
            raise TypeError(f"LayerNormRule applies to nn.LayerNorm, not {type(module).__name__}")
        x, y = inputs[0], outputs[0]
        dims = tuple(range(-len(module.normalized_shape), 0))
        std = (x.var(dims, unbiased=False, keepdim=True) + module.eps).sqrt().detach()
        s = relevance_out[0] / _stab(self.epsilon)(y)
        if module.weight is not None:
            s = s * module.weight.detach()
        s = s / std
        return [x * (s - s.mean(dims, keepdim=True)), *[None] * (len(inputs) - 1)]
