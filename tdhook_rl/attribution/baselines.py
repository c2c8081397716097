"""Baselines of path methods: zero, a constant, a tensor, or an entry of the input TensorDict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.core.keys import as_key

BaselineSpec = None | float | int | torch.Tensor | str | tuple
Baselines = BaselineSpec | Mapping[NestedKey, BaselineSpec]


def _spec_for(baseline: Baselines, key: NestedKey) -> BaselineSpec:
    if isinstance(baseline, Mapping):
        return baseline.get(key, 0.0)
    return baseline


def normalize_baselines(baseline: Baselines) -> Baselines:
    """A mapping's keys in canonical form (``("observation",)`` -> ``"observation"``)."""
    if isinstance(baseline, Mapping):
        return {as_key(k, "baseline mapping key"): v for k, v in baseline.items()}
    return baseline


def check_baseline_keys(baseline: Baselines, inputs: Sequence[NestedKey]) -> None:
    """A baseline mapping names inputs only: a ``ValueError`` names any other key.

    Examples:
        >>> check_baseline_keys({"obsrvation": 1.0}, ["observation"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the baseline mapping names 'obsrvation', which is not an input; the ...
    """
    if not isinstance(baseline, Mapping):
        return
    for key in baseline:
        if as_key(key, "baseline mapping key") not in inputs:
            raise ValueError(
                f"the baseline mapping names {key!r}, which is not an input; the inputs are "
                f"{list(inputs)}"
            )


def baseline_keys(baseline: Baselines) -> list[NestedKey]:
    """TensorDict keys the baselines read (they are carried along with the inputs)."""
    specs = baseline.values() if isinstance(baseline, Mapping) else [baseline]
    return [as_key(s, "baseline key") for s in specs if isinstance(s, str | tuple)]


def resolve_baseline(
    baseline: Baselines, key: NestedKey, x: torch.Tensor, td: TensorDictBase
) -> torch.Tensor:
    """The baseline for input ``key`` with value ``x``, broadcast to ``x.shape``.

    Raises:
        KeyError: a baseline key is not in ``td``.
        ValueError: the baseline's shape does not broadcast to the input's.
    """
    site_key = getattr(key, "baseline_key", None)
    if site_key is not None:  # a hidden site: its activation under the baseline input
        value = td.get(site_key, None)
        if value is None:
            raise KeyError(
                f"no baseline activation for hidden site {key!r} in the TensorDict; "
                "Attributed computes it from the module's inputs at their baseline"
            )
        return value.to(device=x.device, dtype=x.dtype).expand_as(x)
    spec = _spec_for(baseline, key)
    if spec is None:
        spec = 0.0
    if isinstance(spec, bool) or not isinstance(spec, float | int | torch.Tensor | str | tuple):
        raise TypeError(
            f"baseline for {key!r} must be a number, a tensor or a TensorDict key, got {spec!r}"
        )
    if isinstance(spec, float | int):
        return torch.full_like(x, float(spec))
    if isinstance(spec, str | tuple):
        bkey = as_key(spec, "baseline key")
        value = td.get(bkey, None)
        if value is None:
            raise KeyError(
                f"baseline key {bkey!r} for input {key!r} is not in the TensorDict; "
                "write it there (e.g. with a transform) or pass a number or a tensor."
            )
        spec = value
    spec = spec.to(device=x.device, dtype=x.dtype)
    try:
        return spec.expand_as(x)
    except RuntimeError:
        raise ValueError(
            f"baseline for input {key!r} has shape {tuple(spec.shape)}, which does not broadcast "
            f"to the input's shape {tuple(x.shape)}; give one value per feature "
            f"(shape {tuple(x.shape[td.batch_dims :])}) or the input's full shape."
        ) from None
