"""Feature dashboards: for each SAE feature, its top-activating samples and a histogram, and
each feature's first-order attribution to each head (:func:`feature_attributions`).

Two streamed passes over the data (so a replay buffer larger than memory works): the first
keeps each feature's running top ``top`` values and sample indices and its maximum, the second
fills a histogram of the feature's non-zero values on ``[0, max]``. Sample indices count the
data's rows in reading order: a tensor or TensorDict flattened row-major over its batch
dimensions, a replay buffer in storage order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase

from tdhook_rl.concepts.sae import SparseAutoencoder
from tdhook_rl.concepts.sae_training import activation_batches
from tdhook_rl.concepts.tcav import directional_derivatives
from tdhook_rl.core.sites import KeySite, ModuleSite
from tdhook_rl.latent.intervened import get

__all__ = ["FeatureDashboard", "feature_attributions", "feature_dashboard"]


@dataclass
class FeatureDashboard:
    """Per-feature numbers of :func:`feature_dashboard` (``F`` features shown).

    Attributes:
        features: ``[F]`` the features' indices in the SAE.
        top_indices: ``[F, top]`` the flat sample indices of the highest activations (``-1``
            where the feature fired on fewer samples).
        top_values: ``[F, top]`` those activations, descending (0 where it did not fire).
        frequency: ``[F]`` the fraction of samples on which the feature fires.
        histogram: ``[F, bins]`` counts of the non-zero activations in ``bins`` equal bins.
        bin_edges: ``[F, bins + 1]`` each feature's bins, ``0 .. max``.
        n: the number of samples read.
    """

    features: torch.Tensor
    top_indices: torch.Tensor
    top_values: torch.Tensor
    frequency: torch.Tensor
    histogram: torch.Tensor
    bin_edges: torch.Tensor
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, for JSON."""
        out: dict[str, Any] = {"n": self.n}
        for name in ("features", "top_indices", "top_values", "frequency", "histogram",
                     "bin_edges"):  # fmt: skip
            out[name] = getattr(self, name).tolist()
        return out


@torch.no_grad()
def feature_dashboard(
    sae: SparseAutoencoder,
    data: Any,
    key: NestedKey | None = None,
    *,
    features: Sequence[int] | None = None,
    top: int = 10,
    bins: int = 20,
    batch_size: int = 4096,
) -> FeatureDashboard:
    """The top-activating samples and activation histogram of each feature.

    Args:
        sae: the trained SAE.
        data, key, batch_size: the activations, as :func:`~tdhook_rl.concepts.sae_training.
            activation_batches` reads them (in order).
        features: which features (default: all).
        top: samples kept per feature.
        bins: histogram bins.

    Examples:
        >>> sae = SparseAutoencoder(4, 6, seed=0)
        >>> board = feature_dashboard(sae, torch.randn(50, 4), top=3, bins=5)
        >>> board.top_values.shape, board.histogram.shape
        (torch.Size([6, 3]), torch.Size([6, 5]))
    """
    if not isinstance(top, int) or top < 1 or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"top and bins must be positive ints, got top={top!r}, bins={bins!r}")
    device = sae.decoder.device
    chosen = torch.arange(sae.n_features) if features is None else torch.as_tensor(features)
    if chosen.ndim != 1 or chosen.numel() == 0 or chosen.dtype.is_floating_point:
        raise ValueError(f"features must be a non-empty list of indices, got {features!r}")
    if bool((chosen < 0).any() | (chosen >= sae.n_features).any()):
        raise IndexError(f"features {features} out of range for an SAE of {sae.n_features}")
    chosen = chosen.to(device)
    n_f = chosen.numel()
    start = activation_batches(data, key, batch_size, shuffle=False, device=device)
    values = torch.zeros(n_f, 0, device=device)
    indices = torch.zeros(n_f, 0, dtype=torch.long, device=device)
    fires = torch.zeros(n_f, dtype=torch.long, device=device)
    n = 0
    for x in start():
        f = sae.encode(x)[:, chosen].T  # (b, F_all) -> (F, b)
        rows = torch.arange(n, n + x.shape[0], device=device).expand(n_f, -1)
        values, pick = torch.cat([values, f], 1).topk(min(top, values.shape[1] + f.shape[1]), 1)
        indices = torch.cat([indices, rows], 1).gather(1, pick)
        fires += (f > 0).sum(1)
        n += x.shape[0]
    if values.shape[1] < top:  # fewer samples than top
        pad = top - values.shape[1]
        values = torch.cat([values, values.new_zeros(n_f, pad)], 1)
        indices = torch.cat([indices, indices.new_full((n_f, pad), -1)], 1)
    indices = torch.where(values > 0, indices, -1)
    high = values[:, 0].clamp_min(1e-12)  # (F,) each feature's maximum
    histogram = torch.zeros(n_f, bins, dtype=torch.long, device=device)
    for x in start():
        f = sae.encode(x)[:, chosen].T  # (F, b)
        which = (f / high[:, None] * bins).long().clamp_max(bins - 1)
        flat = (torch.arange(n_f, device=device)[:, None] * bins + which)[f > 0]
        histogram += torch.bincount(flat, minlength=n_f * bins).reshape(n_f, bins)
    edges = high[:, None] * torch.linspace(0, 1, bins + 1, device=device)
    return FeatureDashboard(
        features=chosen.cpu(),
        top_indices=indices.cpu(),
        top_values=values.cpu(),
        frequency=(fires.double() / n).cpu(),
        histogram=histogram.cpu(),
        bin_edges=torch.where(values[:, :1] > 0, edges, 0.0).cpu(),
        n=n,
    )


def feature_attributions(
    module: TensorDictModuleBase,
    inputs: TensorDictBase,
    site: str | ModuleSite | KeySite,
    sae: SparseAutoencoder,
    heads: dict[str, Any],
) -> torch.Tensor:
    """Each feature's first-order contribution to each head, ``[n_heads, *batch, F]``.

    The contribution of feature ``j`` on an input is what removing it from the activation
    (``a -> a - input_scale * f_j(a) * decoder[:, j]``, i.e. ``SAEFeature(sae, j, value=0)``)
    changes in the head, to first order: ``input_scale * f_j(a) * (grad_a head . decoder[:, j])``
    (gradient times activation in the feature basis). It is exact where the head is linear in
    the site (a site just before an output layer). All heads and features come from one
    forward pass and one batched backward (:func:`~tdhook_rl.concepts.tcav.
    directional_derivatives` along the decoder's columns).

    Args:
        module, inputs, site, heads: as :func:`~tdhook_rl.concepts.tcav.directional_derivatives`.
        sae: the SAE trained on the site's activations.
    """
    with torch.no_grad():
        activation = get(module, inputs, site)
        if not isinstance(activation, torch.Tensor):
            raise TypeError(f"site {site!r} gives a {type(activation).__name__}, not a tensor")
        f = sae.encode(activation.reshape(*inputs.batch_size, -1))  # (*batch, F)
    decoder = sae.decoder.detach().T  # (F, d_in): one direction per feature
    dd = directional_derivatives(module, inputs, site, decoder, heads)  # (H, *batch, F)
    return dd * f * sae.input_scale
