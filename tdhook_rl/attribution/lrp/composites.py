"""Composites: which LRP rule each submodule gets, and :func:`applying` them for one pass.

A :class:`Composite` maps keys to :class:`~.rules.Rule` s. A key is

* a module path as ``root.named_modules()`` spells it (``"module.0.module.4"``),
* a position among the root's layers (``0`` the first ``Linear``/``Conv``, ``-1`` the last;
  :class:`At` counts among other types, e.g. the first convolution),
* a module type or a tuple of types (``isinstance``; in the order given).

They are matched in that order (path, then position, then type); a module that gets a rule
keeps its children out of the search. Unless ``defaults=False``, the types in
:data:`DEFAULT_RULES` come last: element-wise activations pass relevance through,
``LayerNorm`` takes the LN-rule, ``nn.LSTM``/``nn.GRU`` the recurrent rules of
:mod:`.recurrent` (the carried state held fixed), ``NormalParamExtractor`` /
``AddStateIndependentNormalScale`` hand the relevance of ``loc`` (and ``scale``) back, and
linear parameter-free layers (reshapes, dropout, max-pooling, TensorDict routing modules)
keep their gradient. Any other module without children and without a rule is an error that
lists them all.
:class:`~.rules.Gradient` given to a module with children keeps the gradient of that module's
own operations only; its children still get their rules. A rule named for a module that a
canonizer merges (a batch norm) is ignored: the merged layer takes the rule of its first
module.

The standard composites follow zennit 0.5.1: :class:`EpsilonPlus` (convolutions z+, dense
layers epsilon), :class:`EpsilonGammaBox` (first convolution z^B, other convolutions gamma,
dense epsilon), :class:`EpsilonAlpha2Beta1` (convolutions alpha2-beta1, dense epsilon),
:class:`EpsilonPlusFlat` (first layer flat, convolutions z+, dense epsilon). Every composite
merges batch norms into the layer before them (:class:`~.canonizers.MergeBatchNorm`) unless
given other canonizers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from tensordict.nn import AddStateIndependentNormalScale, NormalParamExtractor, TensorDictModuleBase
from torch import nn
from torchrl.modules.models.utils import SquashDims, SqueezeLayer

from tdhook_rl.attribution.lrp.canonizers import Canonizer, Fusion, MergeBatchNorm
from tdhook_rl.attribution.lrp.layer_rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LayerNormRule,
    Stabilizer,
    ZBox,
    ZPlus,
)
from tdhook_rl.attribution.lrp.recurrent import GRURule, LSTMRule
from tdhook_rl.attribution.lrp.rules import Gradient, Pass, Rule, SplitPass, ruling, with_relevance
from tdhook_rl.core.intercept import Interception, intercepting

__all__ = [
    "ACTIVATIONS",
    "CONVOLUTIONS",
    "DEFAULT_RULES",
    "LAYERS",
    "At",
    "Composite",
    "EpsilonAlpha2Beta1",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "Plan",
    "applying",
]

#: element-wise activations: relevance passes through (zennit's ``Activation`` types)
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU,
    nn.LogSigmoid, nn.PReLU, nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU,
    nn.Sigmoid, nn.SiLU, nn.Mish, nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh,
    nn.Tanhshrink, nn.Threshold,
)  # fmt: skip
CONVOLUTIONS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: the layers that positions count (``0`` is the first of them)
LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, *CONVOLUTIONS)
_LINEAR_PARAMETER_FREE: tuple[type[nn.Module], ...] = (
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, SquashDims,
    SqueezeLayer, TensorDictModuleBase,
)  # fmt: skip
#: the rules every composite falls back to (``defaults=False`` drops them)
DEFAULT_RULES: dict[Any, Rule] = {
    ACTIVATIONS: Pass(),
    nn.LayerNorm: LayerNormRule(),
    NormalParamExtractor: SplitPass(),
    AddStateIndependentNormalScale: Pass(output=0),
    _LINEAR_PARAMETER_FREE: Gradient(),
    nn.LSTM: LSTMRule(),  # Arras et al. 2017: relevance through the signal, not the gates
    nn.GRU: GRURule(),
}


@dataclass(frozen=True)
class At:
    """The ``index``-th module of ``types`` in ``root.named_modules()`` order (negative:
    from the end).

    Examples:
        >>> At(0, CONVOLUTIONS)
        At(index=0, types=(<class 'torch.nn.modules.conv.Conv1d'>, ...))
    """

    index: int
    types: tuple[type[nn.Module], ...] = LAYERS


Key = str | int | At | type | tuple


@dataclass
class Plan:
    """What a composite gives one module: ``(path, module, rule)`` per ruled module, and
    the merged layers of the canonizers with their rules."""

    rules: list[tuple[str, nn.Module, Rule]]
    fusions: list[tuple[Fusion, Rule]]


class Composite:
    """Rules for a network's modules (see the module docstring for the keys).

    Args:
        rules: ``{key: rule}``; paths and positions take precedence over types.
        canonizers: merged layers (default: batch norms merged into the layer before them).
        defaults: fall back to :data:`DEFAULT_RULES`.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> plan = Composite({nn.Linear: Epsilon(1e-6), "2": Flat()}).plan(net)
        >>> [(path, type(rule).__name__) for path, _, rule in plan.rules]
        [('0', 'Epsilon'), ('1', 'Pass'), ('2', 'Flat')]
    """

    def __init__(
        self,
        rules: Mapping[Key, Rule] | None = None,
        canonizers: Sequence[Canonizer] | None = None,
        defaults: bool = True,
    ) -> None:
        rules = dict(rules or {})
        for key, rule in rules.items():
            if not isinstance(rule, Rule):
                raise TypeError(f"the rule for {key!r} is {rule!r}, not a Rule (e.g. Epsilon())")
            if not isinstance(key, str | int | At | type | tuple) or isinstance(key, bool):
                raise TypeError(
                    f"composite key {key!r}: use a module path (str), a position (int or At) "
                    "or a module type (or tuple of types)"
                )
        self.rules = rules
        self.canonizers = list(canonizers) if canonizers is not None else [MergeBatchNorm()]
        self.defaults = defaults

    def plan(self, root: nn.Module) -> Plan:
        """The rule of every module of ``root``; raises if a path or position does not
        exist, or if a module without children is left without a rule."""
        modules = dict(root.named_modules())
        names = {k: r for k, r in self.rules.items() if isinstance(k, str)}
        missing = [k for k in names if k not in modules]
        if missing:
            raise ValueError(
                f"the composite names {missing}, not submodules of {type(root).__name__}; "
                f"paths as named_modules() spells them, e.g. {_examples(modules)}"
            )
        by_module = {id(modules[k]): r for k, r in names.items()}
        for key, rule in self.rules.items():
            if isinstance(key, int | At) and not isinstance(key, bool):
                at = key if isinstance(key, At) else At(key)
                candidates = [m for m in modules.values() if isinstance(m, at.types)]
                if not -len(candidates) <= at.index < len(candidates):
                    raise ValueError(
                        f"the composite asks for layer {at.index} of "
                        f"{[t.__name__ for t in at.types]}, "
                        f"but {type(root).__name__} has {len(candidates)} of them"
                    )
                by_module.setdefault(id(candidates[at.index]), rule)
        types = [(k, r) for k, r in self.rules.items() if isinstance(k, type | tuple)]
        if self.defaults:
            types += list(DEFAULT_RULES.items())
        fusions, absorbed = [], set()
        for canonizer in self.canonizers:
            for fusion in canonizer.fuse(root):
                first = modules[fusion.first]
                merged_rule = by_module.get(id(first)) or _by_type(fusion.merged, types)
                if merged_rule is None or isinstance(merged_rule, Gradient):
                    continue
                fusions.append((fusion, merged_rule))
                absorbed.update(fusion.inner)
        ruled: list[tuple[str, nn.Module, Rule]] = []
        uncovered: list[str] = []
        skip: tuple[str, ...] = ()
        for path, module in modules.items():
            if skip and any(path.startswith(p) for p in skip):
                continue
            if path in absorbed:
                continue
            found = by_module.get(id(module)) or _by_type(module, types)
            is_leaf = next(module.children(), None) is None
            if found is not None and (is_leaf or not isinstance(found, Gradient)):
                ruled.append((path, module, found))
                skip = (*skip, f"{path}." if path else "")
            elif found is None and is_leaf:
                uncovered.append(f"{path or '<root>'!r} ({type(module).__name__})")
        if uncovered:
            raise ValueError(
                f"LRP has no rule for {len(uncovered)} module(s): {', '.join(uncovered)}; add "
                "one to the composite, e.g. Composite({MyLayer: Epsilon()}) for a linear layer, "
                "Pass() for an element-wise one, Gradient() to keep its gradient"
            )
        return Plan(ruled, fusions)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rules!r}, canonizers={self.canonizers!r})"


def _by_type(module: nn.Module, types: list[tuple[Any, Rule]]) -> Rule | None:
    return next((r for t, r in types if isinstance(module, t)), None)


def _examples(modules: Mapping[str, nn.Module]) -> list[str]:
    return [name for name, m in modules.items() if name and next(m.children(), None) is None][:3]


class _Standard(Composite):
    def __init__(
        self,
        layers: dict[Key, Rule],
        rules: Mapping[Key, Rule] | None,
        canonizers: Sequence[Canonizer] | None,
    ) -> None:
        merged = dict(rules or {})  # the caller's rules first: matched before these
        for key, rule in layers.items():
            merged.setdefault(key, rule)
        super().__init__(merged, canonizers)


class EpsilonPlus(_Standard):
    """Convolutions z+, dense layers epsilon (zennit's ``EpsilonPlus``); ``rules`` are
    matched before these.

    Examples:
        >>> EpsilonPlus().rules[nn.Linear]
        Epsilon(epsilon=1e-06, zero_params=None)
    """

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        rules: Mapping[Key, Rule] | None = None,
        zero_params: str | Sequence[str] | None = None,
        canonizers: Sequence[Canonizer] | None = None,
    ) -> None:
        layers: dict[Key, Rule] = {
            CONVOLUTIONS: ZPlus(stabilizer, zero_params),
            nn.Linear: Epsilon(epsilon, zero_params),
        }
        super().__init__(layers, rules, canonizers)


class EpsilonAlpha2Beta1(_Standard):
    """Convolutions alpha2-beta1, dense layers epsilon (zennit's ``EpsilonAlpha2Beta1``).

    Examples:
        >>> EpsilonAlpha2Beta1().rules[CONVOLUTIONS]
        AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-06, zero_params=None)
    """

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        rules: Mapping[Key, Rule] | None = None,
        zero_params: str | Sequence[str] | None = None,
        canonizers: Sequence[Canonizer] | None = None,
    ) -> None:
        layers: dict[Key, Rule] = {
            CONVOLUTIONS: AlphaBeta(2.0, 1.0, stabilizer, zero_params),
            nn.Linear: Epsilon(epsilon, zero_params),
        }
        super().__init__(layers, rules, canonizers)


class EpsilonGammaBox(_Standard):
    """The first convolution z^B (inputs within ``low``/``high``), other convolutions
    gamma, dense layers epsilon (zennit's ``EpsilonGammaBox``: a network without
    convolutions gets no z^B layer).

    Examples:
        >>> EpsilonGammaBox(-1.0, 1.0).rules[At(0, CONVOLUTIONS)]
        ZBox(low=-1.0, high=1.0, stabilizer=1e-06, zero_params=None)
    """

    def __init__(
        self,
        low: Any,
        high: Any,
        epsilon: Stabilizer = 1e-6,
        gamma: float = 0.25,
        stabilizer: Stabilizer = 1e-6,
        rules: Mapping[Key, Rule] | None = None,
        zero_params: str | Sequence[str] | None = None,
        canonizers: Sequence[Canonizer] | None = None,
    ) -> None:
        layers: dict[Key, Rule] = {
            At(0, CONVOLUTIONS): ZBox(low, high, stabilizer, zero_params),
            CONVOLUTIONS: Gamma(gamma, stabilizer, zero_params),
            nn.Linear: Epsilon(epsilon, zero_params),
        }
        super().__init__(layers, rules, canonizers)

    def plan(self, root: nn.Module) -> Plan:
        if not any(isinstance(m, CONVOLUTIONS) for m in root.modules()):
            return _without_first(self, root)
        return super().plan(root)


class EpsilonPlusFlat(_Standard):
    """The first layer (dense or convolution) flat, other convolutions z+, dense layers
    epsilon (zennit's ``EpsilonPlusFlat``).

    Examples:
        >>> EpsilonPlusFlat().rules[At(0)]
        Flat(stabilizer=1e-06, zero_params=None)
    """

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        rules: Mapping[Key, Rule] | None = None,
        zero_params: str | Sequence[str] | None = None,
        canonizers: Sequence[Canonizer] | None = None,
    ) -> None:
        layers: dict[Key, Rule] = {
            At(0): Flat(stabilizer, zero_params),
            CONVOLUTIONS: ZPlus(stabilizer, zero_params),
            nn.Linear: Epsilon(epsilon, zero_params),
        }
        super().__init__(layers, rules, canonizers)


def _without_first(composite: Composite, root: nn.Module) -> Plan:
    rest: dict[Key, Rule] = {k: r for k, r in composite.rules.items() if not isinstance(k, At)}
    return Composite(rest, composite.canonizers, composite.defaults).plan(root)


def _enter_fusion(
    stack: list[list[Any]], fusion: Fusion, output: Any, args: tuple, kwargs: dict
) -> None:
    stack.append([args, kwargs])  # the merged layer's input, for the stretch's last module
    return None


def _leave_fusion(
    stack: list[list[Any]], fusion: Fusion, rule: Rule, output: Any, args: tuple, kwargs: dict
) -> Any:
    for module in fusion.check:
        if module.training and not isinstance(module, nn.Identity):
            raise RuntimeError(
                f"{fusion.last!r} ({type(module).__name__}) runs in training mode, but LRP "
                "merges it into the layer before it with its running statistics; call .eval()"
            )
    if not stack:
        return None
    inputs = stack.pop()
    return with_relevance(rule, fusion.merged, inputs, output)


@contextmanager
def applying(root: nn.Module, composite: Composite) -> Iterator[Plan]:
    """For the calling thread, inside the block, every module of ``root`` carries its rule
    in the backward of the tensors it outputs; nothing stays on ``root`` afterwards (also
    after an exception), and ``root`` is never modified.

    Examples:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> x = torch.rand(2, 3, requires_grad=True)
        >>> with applying(net, EpsilonPlus()):
        ...     y = net(x)
        >>> relevance = torch.autograd.grad(y.sum(), x)[0] * y.detach()
        >>> relevance.shape, sum(len(m._forward_hooks) for m in net.modules())
        (torch.Size([2, 3]), 0)
    """
    plan = composite.plan(root)
    modules = dict(root.named_modules())
    fused = []
    for fusion, rule in plan.fusions:
        stack: list[list[Any]] = []
        fused.append(
            Interception(
                modules[fusion.first], partial(_enter_fusion, stack, fusion), with_inputs=True
            )
        )
        fused.append(
            Interception(
                modules[fusion.last], partial(_leave_fusion, stack, fusion, rule), with_inputs=True
            )
        )
    with ruling([(m, r) for _, m, r in plan.rules]), intercepting(fused):
        yield plan
