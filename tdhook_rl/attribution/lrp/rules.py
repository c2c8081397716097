"""LRP rules and the mechanism that makes a module's backward return their relevance.

A :class:`Rule` says how the relevance of a module's outputs is distributed onto its inputs.
:func:`ruling` makes, for one attribution pass and the calling thread only, every given
submodule's outputs carry a custom autograd function whose backward returns
``rule.relevance(...)`` for the module's tensor inputs, and cuts the ordinary gradient path
through the module (through :mod:`tdhook_rl.core.intercept`: nothing stays on the module,
also after an exception). Modules without a rule keep their ordinary gradient, which is what
LRP wants for linear parameter-free layers (reshapes, flattening, dropout in eval mode).

The rules follow zennit 0.5.1's definitions; those of linear layers and ``LayerNorm`` live
in :mod:`.layer_rules` (``z`` is the layer's output, ``R`` the relevance of the output):

* :class:`Epsilon`: ``R_in = x * W^T (R / stab(z))``;
* :class:`Gamma`: the generalised gamma rule (positive and negative outputs separately);
* :class:`ZPlus`, :class:`AlphaBeta`: positive (and negative) contributions only;
* :class:`ZBox`: the z^B rule for inputs bounded by ``low``/``high``;
* :class:`Flat`, :class:`WSquare`: relevance spread by unit (or squared) weights;
* :class:`Pass`: relevance passed through unchanged (element-wise activations);
* :class:`LayerNormRule`: the LN-rule of Ali et al. (2022): the normalising standard
  deviation held constant, then the epsilon rule through the centred, scaled linear map;
* :class:`SplitPass`: ``NormalParamExtractor``: the relevance of ``loc`` and ``scale`` goes
  back to the halves of the shared layer they were cut from (the scale's biased softplus is
  passed through like an element-wise activation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from tdhook_rl.core.intercept import Interception, intercepting

__all__ = ["Gradient", "Pass", "Rule", "SplitPass", "ruling", "with_relevance"]


class Rule:
    """How the relevance of a module's outputs flows to its inputs.

    Subclasses implement :meth:`relevance`. A rule instance may serve many modules (it keeps
    no per-module state).
    """

    def relevance(
        self,
        module: nn.Module,
        inputs: list[Tensor],
        outputs: list[Tensor],
        relevance_out: list[Tensor],
    ) -> list[Tensor | None]:
        """Relevance of each (flattened, ``torch.utils._pytree`` leaf) tensor input of
        ``module``, given the relevance of each tensor output leaf. Must be linear in
        ``relevance_out`` and use only plain torch ops (it runs inside the batched backward:
        ``relevance_out`` may carry an invisible vmapped target dimension). ``None`` = no
        relevance flows to that input."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Gradient(Rule):
    """No rule: the module keeps its ordinary gradient (for linear parameter-free layers such
    as reshapes, or to opt a module out on purpose). :func:`ruling` leaves it alone.

    Examples:
        >>> Gradient()
        Gradient()
    """

    def relevance(self, module, inputs, outputs, relevance_out):  # never wrapped
        raise RuntimeError("Gradient() is not a relevance rule: the module is not wrapped")


class Pass(Rule):
    """Pass-through: the relevance of one output goes unchanged to the first input (zennit's
    ``Pass``, for element-wise activations); further inputs get the relevance of the outputs
    after ``output`` in order (modules that return ``(value, *others)``).

    Args:
        output: which output's relevance reaches the first input (``0``). For
            ``AddStateIndependentNormalScale`` (``loc -> (loc, scale)``) this drops the
            scale's relevance: the scale does not depend on the input.

    Examples:
        >>> r = Pass().relevance(nn.Tanh(), [torch.ones(2)], [torch.ones(2)], [torch.ones(2)])
        >>> r[0].tolist()
        [1.0, 1.0]
    """

    def __init__(self, output: int = 0) -> None:
        self.output = output

    def relevance(self, module, inputs, outputs, relevance_out):
        first = relevance_out[self.output]
        if first.shape != inputs[0].shape:
            raise ValueError(
                f"Pass(): output {self.output} of {type(module).__name__} has shape "
                f"{tuple(first.shape)}, its input {tuple(inputs[0].shape)}; pass-through needs "
                "an element-wise module (give this module another rule)"
            )
        rest = relevance_out[self.output + 1 :]
        return [first, *(rest[i] if i < len(rest) else None for i in range(len(inputs) - 1))]


class SplitPass(Rule):
    """The first input was cut into the first ``parts`` outputs along ``dim`` (element-wise
    maps applied): their relevance is concatenated back; further inputs get the relevance of
    the outputs after them (``NormalParamExtractor``: ``x -> (loc, scale, *others)``).

    Examples:
        >>> from tensordict.nn import NormalParamExtractor
        >>> rule, x = SplitPass(), torch.ones(4)
        >>> rule.relevance(NormalParamExtractor(), [x], [x[:2], x[2:]],
        ...                [torch.ones(2), torch.zeros(2)])[0].tolist()
        [1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, parts: int = 2, dim: int = -1) -> None:
        self.parts, self.dim = parts, dim

    def relevance(self, module, inputs, outputs, relevance_out):
        first = torch.cat(relevance_out[: self.parts], self.dim)
        rest = relevance_out[self.parts :]
        return [first, *(rest[i] if i < len(rest) else None for i in range(len(inputs) - 1))]


class _Relevance(torch.autograd.Function):
    """Outputs tied to inputs by a rule: backward returns the rule's relevance."""

    @staticmethod
    def forward(ctx: Any, rule: Rule, module: nn.Module, n_in: int, *tensors: Tensor) -> Any:
        ctx.rule, ctx.module, ctx.n_in = rule, module, n_in
        ctx.save_for_backward(*tensors)
        return tuple(t.detach() for t in tensors[n_in:])

    @staticmethod
    def backward(ctx: Any, *relevance_out: Tensor) -> Any:
        tensors = ctx.saved_tensors
        inputs, outputs = list(tensors[: ctx.n_in]), list(tensors[ctx.n_in :])
        rel = ctx.rule.relevance(ctx.module, inputs, outputs, list(relevance_out))
        if len(rel) != len(inputs):
            raise RuntimeError(
                f"{ctx.rule!r} returned {len(rel)} relevances for the {len(inputs)} tensor "
                f"inputs of {type(ctx.module).__name__}: return one per input (None for none)"
            )
        grads: list[Tensor | None] = []
        for r, x, needed in zip(rel, inputs, ctx.needs_input_grad[3 : 3 + ctx.n_in], strict=True):
            if r is not None and r.shape != x.shape:
                raise RuntimeError(
                    f"{ctx.rule!r} returned relevance of shape {tuple(r.shape)} for an input of "
                    f"{type(ctx.module).__name__} of shape {tuple(x.shape)}"
                )
            grads.append(r if needed else None)
        return (None, None, None, *grads, *[None] * len(outputs))


def with_relevance(rule: Rule, module: nn.Module, inputs: Sequence[Any], output: Any) -> Any:
    """``output`` (any pytree) tied to the tensors among ``inputs`` by ``rule``: the
    backward through the returned tensors gives ``rule.relevance(module, ...)`` at the
    inputs, and nothing through the module's own graph. ``output`` is returned as is when no
    input requires a gradient (or gradients are off).

    Examples:
        >>> lin = nn.Linear(3, 2)
        >>> x = torch.ones(3, requires_grad=True)
        >>> y = with_relevance(Pass(), nn.Identity(), [x], x * 2)
        >>> torch.autograd.grad(y.sum(), x)[0].tolist()
        [1.0, 1.0, 1.0]
    """
    ins = [t for t in pytree.tree_leaves(list(inputs)) if isinstance(t, Tensor)]
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in ins):
        return output
    leaves, spec = pytree.tree_flatten(output)
    at = [i for i, t in enumerate(leaves) if isinstance(t, Tensor) and t.is_floating_point()]
    if not at:
        return output
    tied = _Relevance.apply(rule, module, len(ins), *ins, *[leaves[i] for i in at])
    for i, t in zip(at, tied, strict=True):
        leaves[i] = t
    return pytree.tree_unflatten(leaves, spec)


def _tie(rule: Rule, module: nn.Module, output: Any, args: tuple, kwargs: dict) -> Any:
    return with_relevance(rule, module, [args, kwargs], output)


def ruling(assignments: Iterable[tuple[nn.Module, Rule]]) -> intercepting:
    """A context in which each module's outputs carry its rule's relevance backward (for the
    calling thread; :class:`Gradient` entries are left alone). Enter it around the forward
    pass; the backward may run after the block.

    Examples:
        >>> from tdhook_rl.attribution.lrp.layer_rules import Epsilon
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> x = torch.rand(2, 3, requires_grad=True)
        >>> with ruling([(net[0], Epsilon()), (net[1], Pass()), (net[2], Epsilon())]):
        ...     y = net(x)
        >>> r = torch.autograd.grad(y.sum(), x)[0] * y  # top relevance: the output
        >>> r.shape, len(net[0]._forward_hooks)
        (torch.Size([2, 3]), 0)
    """
    return intercepting(
        Interception(module, partial(_tie, rule, module), with_inputs=True)
        for module, rule in assignments
        if not isinstance(rule, Gradient)
    )
