"""Saliency: the gradient of the target with respect to the input (Simonyan et al., 2014)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import NestedKey

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine


class Saliency(AttributionMethod):
    """Gradient of each target with respect to each input feature.

    Args:
        abs: return ``|gradient|`` (captum's default) instead of the signed gradient.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, Saliency(abs=False), inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.ones(3)))
        >>> torch.allclose(out["attribution", "value", "observation"], net.module.weight[0])
        True
    """

    def __init__(self, abs: bool = True) -> None:
        self.abs = abs

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        grads = engine.gradients(inputs)  # key -> (n_targets, *batch, *feature)
        if self.abs:
            grads = {k: g.abs() for k, g in grads.items()}
        return AttributionResult(grads)

    def __repr__(self) -> str:
        return f"Saliency(abs={self.abs})"
