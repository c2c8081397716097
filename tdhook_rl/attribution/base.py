"""The attribution-method interface and the lookup of methods by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution.engine import GradientEngine


@dataclass
class AttributionResult:
    """What a method returns.

    Attributes:
        attributions: per input key, ``(n_targets, *batch, *feature)``.
        delta: the completeness delta ``(n_targets, *batch)`` for methods that have one.
    """

    attributions: dict[NestedKey, torch.Tensor]
    delta: torch.Tensor | None = None


class AttributionMethod(ABC):
    """Base class of gradient-based attribution methods.

    A method receives a :class:`GradientEngine` bound to the module, the targets and the
    non-attributed inputs, plus the attributed inputs, and returns per-target attributions.
    It never touches the module directly.
    """

    #: The method writes a completeness delta (``sum(attribution) - (f(x) - f(baseline))``).
    has_convergence_delta: ClassVar[bool] = False
    #: Keys of the input TensorDict the method reads besides the inputs (baseline keys).
    context_keys: tuple[NestedKey, ...] | list[NestedKey] = ()

    def check_inputs(  # noqa: B027 (optional hook, no-op by default)
        self, inputs: Sequence[NestedKey]
    ) -> None:
        """Validates arguments against the attributed input keys, when the wrapper is built."""

    def check(  # noqa: B027 (optional hook, no-op by default)
        self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase
    ) -> None:
        """Validates arguments against the actual inputs, before the module runs."""

    @abstractmethod
    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        """Attributes every target of ``engine`` to ``inputs`` (each ``(*batch, *feature)``)."""


def sum_features(x: torch.Tensor, leading_dims: int) -> torch.Tensor:
    """Sums ``x`` over every dimension after the first ``leading_dims`` ones."""
    if x.ndim == leading_dims:
        return x  # (``Tensor.sum(())`` would sum everything)
    return x.flatten(leading_dims).sum(-1)
