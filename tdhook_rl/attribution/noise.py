"""Is an attribution a measurement? Rounding-level detection and the sign convention of a
method, for reports, plots and logs that must not rank noise or caption an unsigned map as
signed."""

from __future__ import annotations

import torch

from tdhook_rl.attribution.base import AttributionMethod

__all__ = ["ROUNDING_FACTOR", "is_signed", "rounding_level"]

#: Attributions are at rounding level when they are within this many float ulps of the
#: head's output: fewer than about two significant digits above the arithmetic's rounding.
ROUNDING_FACTOR = 100.0


def rounding_level(
    attribution: torch.Tensor,
    output: torch.Tensor,
    batch_dims: int,
    *,
    factor: float = ROUNDING_FACTOR,
) -> bool:
    """True when a head's attributions are at the floating-point rounding level of its output.

    The test compares the mean over samples of the summed ``|attribution|`` with ``factor``
    times the dtype's machine epsilon times the mean ``|output|``: an attribution that small
    is what float rounding of the head leaves behind (e.g. the gradient of a deterministic
    policy's log-probability at its own mode with a state-independent scale, ~1e-8), not a
    dependence on the input, and must not be ranked or normalized into shares.

    Args:
        attribution: ``(*batch, *feature)`` attributions of one head to one input.
        output: the head's per-sample value, ``(*batch)`` (a trailing 1 is fine).
        batch_dims: how many leading dimensions of ``attribution`` are the batch.
        factor: how many ulps of the output count as rounding (default
            :data:`ROUNDING_FACTOR`).

    Examples:
        >>> out = torch.full((4,), 1.4)
        >>> rounding_level(torch.full((4, 9), 1.7e-8), out, 1)
        True
        >>> rounding_level(torch.full((4, 9), 1e-3), out, 1)
        False
    """
    if attribution.numel() == 0:
        return False  # nothing measured, nothing to call noise
    per_sample = attribution.detach().abs().reshape(*attribution.shape[:batch_dims], -1).sum(-1)
    dtype = output.dtype if output.is_floating_point() else torch.float32
    eps = torch.finfo(dtype).eps
    scale = float(output.detach().abs().double().mean())
    return float(per_sample.double().mean()) <= factor * eps * scale


def is_signed(method: AttributionMethod) -> bool:
    """Whether ``method``'s attributions carry a sign (red raises the head, blue lowers it).

    ``Saliency(abs=True)`` (the default) and SmoothGrad's ``smoothgrad_sq`` and ``vargrad``
    are magnitudes only; SmoothGrad's mean inherits its inner method's sign.

    Examples:
        >>> from tdhook_rl.attribution import IntegratedGradients, Saliency
        >>> is_signed(Saliency()), is_signed(Saliency(abs=False)), is_signed(IntegratedGradients())
        (False, True, True)
    """
    if getattr(method, "abs", False):
        return False
    kind = getattr(method, "kind", None)
    if kind in ("smoothgrad_sq", "vargrad"):
        return False
    inner = getattr(method, "method", None)
    return is_signed(inner) if isinstance(inner, AttributionMethod) else True
