"""Small pieces the ``tdhook-rl explain`` jobs share."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tdhook_rl.attribution import AttributionMethod, resolve_method

__all__ = ["attribution_method", "top_entries"]


def attribution_method(name: str, n_steps: int) -> AttributionMethod:
    """The method called ``name``, with ``n_steps`` path points if it integrates a path.

    Examples:
        >>> attribution_method("ig", 16)
        IntegratedGradients(n_steps=16, rule='gausslegendre', baseline=0.0, chunk_size=None)
        >>> attribution_method("saliency", 16)
        Saliency(abs=True)
    """
    method = resolve_method(name)
    if hasattr(method, "n_steps"):
        method = type(method)(n_steps=n_steps)
    return method


def top_entries(values: torch.Tensor, names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` entries of ``values`` largest in absolute value, with their signed values.

    Args:
        values: any shape; flattened in row-major order to match ``names``.
        names: one name per entry.
        k: how many.

    Examples:
        >>> top_entries(torch.tensor([0.1, -2.0, 0.5]), ["a", "b", "c"], 2)
        [('b', -2.0), ('c', 0.5)]
    """
    flat = values.detach().flatten().cpu()
    if flat.numel() != len(names):
        raise ValueError(f"{len(names)} names for {flat.numel()} values")
    order = flat.abs().argsort(descending=True, stable=True)[:k]
    return [(names[i], float(flat[i])) for i in order.tolist()]
