"""Input x gradient (Shrikumar et al., 2016): the gradient scaled by the input."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import NestedKey

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine


class InputXGradient(AttributionMethod):
    """``input * d target / d input`` for each target and input feature.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, InputXGradient(), inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> x = torch.tensor([1.0, 2.0, 3.0])
        >>> out = explained(TensorDict(observation=x))
        >>> torch.allclose(out["attribution", "value", "observation"], x * net.module.weight[0])
        True
    """

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        grads = engine.gradients(inputs)  # key -> (n_targets, *batch, *feature)
        return AttributionResult({k: g * inputs[k] for k, g in grads.items()})

    def __repr__(self) -> str:
        return "InputXGradient()"
