"""One attribution call over input entries and hidden sites, each group in a pass of its own.

Replacing a hidden site by the values a method differentiates (or perturbs) cuts every path
through it: the observation and a layer it feeds, attributed in one pass, would give the
observation nothing (and an upstream layer nothing through a downstream one). So the input
entries are attributed together, and each hidden site alone with the input entries held at
their values, every pass batched over all targets.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.hidden import HiddenSite

__all__ = ["attribute_by_group"]


def attribute_by_group(
    method: AttributionMethod,
    engine: GradientEngine,
    values: dict[Any, torch.Tensor],
    context: TensorDictBase,
    reference: TensorDictBase,
    inner: torch.Size,
) -> AttributionResult:
    """``method`` on the input entries of ``values`` together and on each hidden site alone.

    Args:
        method: the attribution method.
        engine: the unbound engine (bound here with :meth:`GradientEngine.at`).
        values: input keys and :class:`HiddenSite` s -> their values ``(*batch, *feature)``.
        context, reference, inner: as in :meth:`GradientEngine.at`; ``context`` lacks the
            input entries (each site's pass gets them as fixed context).

    Returns:
        The attributions of every group; the completeness delta is the input entries'
        (without entries, the first site's).
    """
    keys = {k: v for k, v in values.items() if not isinstance(k, HiddenSite)}
    sites = [k for k in values if isinstance(k, HiddenSite)]
    groups = ([keys] if keys else []) + [{site: values[site]} for site in sites]
    if len(groups) == 1:
        return method.attribute(engine.at(context, reference, inner), values)
    held = context.copy()
    for key, value in keys.items():  # fixed inputs of the site passes
        held.set(key, value)
    attributions: dict[Any, torch.Tensor] = {}
    delta = None
    for i, group in enumerate(groups):
        result = method.attribute(
            engine.at(context if group is keys else held, reference, inner), group
        )
        attributions.update(result.attributions)
        if i == 0:
            delta = result.delta
    return AttributionResult(attributions, delta)
