"""Which rows an attribution is shown and logged in: one per feature for small inputs, one
per group of features for large ones (pixels, board planes, long vectors), so that a plot
keeps a readable number of rows and a logger a bounded number of scalars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["MAX_ROWS", "FeatureGroups", "feature_groups"]

#: inputs with at most this many features are shown feature by feature
MAX_ROWS = 64


@dataclass(frozen=True)
class FeatureGroups:
    """How the per-sample features of one input are grouped into rows.

    Attributes:
        names: one name per row.
        kind: ``"feature"`` (one row per feature), ``"leading"`` (one row per index of the
            first per-sample dimension: an image's channels, a board's planes, an agent) or
            ``"block"`` (contiguous blocks of a long vector).
        shape: the per-sample shape the groups were made for.
        block: the features per block (``"block"`` only).
    """

    names: list[str]
    kind: str
    shape: tuple[int, ...]
    block: int = 1

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """Sums ``values`` ``[N, *shape]`` within each group: ``[N, len(names)]`` (pass
        ``values.abs()`` for magnitudes)."""
        n = values.shape[0]
        if tuple(values.shape[1:]) != self.shape:
            raise ValueError(
                f"values have per-sample shape {tuple(values.shape[1:])}; these groups are for "
                f"{self.shape}"
            )
        flat = values.reshape(n, -1)
        if self.kind == "feature":
            return flat
        if self.kind == "leading":
            return values.reshape(n, self.shape[0], -1).sum(-1)
        padded = torch.nn.functional.pad(flat, (0, self.block * len(self.names) - flat.shape[1]))
        return padded.reshape(n, len(self.names), self.block).sum(-1)

    def shares(self, values: torch.Tensor) -> torch.Tensor:
        """Each row's share of the mean absolute value of ``values`` ``[N, *shape]``
        (summing to 1): what a head attends to, per feature or group."""
        magnitude = self(values.abs()).mean(0)
        return magnitude / magnitude.sum().clamp_min(1e-12)


def feature_groups(
    shape: Sequence[int], feature_names: Sequence[str] | None = None, max_rows: int = MAX_ROWS
) -> FeatureGroups:
    """The rows for an input of per-sample ``shape``.

    Args:
        shape: the input's per-sample shape, e.g. ``(9,)``, ``(3, 84, 84)``, ``(18, 8, 8)``.
        feature_names: one name per feature (used as given, however many), or one per index
            of the first dimension (e.g. a board's plane names).
        max_rows: at most this many features are shown one by one without names; larger
            inputs are grouped by their first dimension (when it has at most ``max_rows``
            entries), else in ``max_rows`` contiguous blocks.

    Examples:
        >>> feature_groups((9,)).names[:2]
        ['f0', 'f1']
        >>> feature_groups((3, 84, 84)).names
        ['channel 0', 'channel 1', 'channel 2']
        >>> groups = feature_groups((256,), max_rows=4)
        >>> groups.names, groups(torch.ones(1, 256)).tolist()
        (['f0-63', 'f64-127', 'f128-191', 'f192-255'], [[64.0, 64.0, 64.0, 64.0]])
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if feature_names is not None:
        names = list(feature_names)
        if len(names) == numel:
            return FeatureGroups(names, "feature", shape)
        if len(shape) >= 2 and len(names) == shape[0]:
            return FeatureGroups(names, "leading", shape)
        raise ValueError(
            f"{len(names)} feature names for an input of shape {shape}: give one per feature "
            f"({numel}) or one per index of its first dimension ({shape[0] if shape else 1})"
        )
    if numel <= max_rows:
        return FeatureGroups([f"f{i}" for i in range(numel)], "feature", shape)
    if len(shape) >= 2 and shape[0] <= max_rows:
        return FeatureGroups([f"channel {i}" for i in range(shape[0])], "leading", shape)
    size = math.ceil(numel / max_rows)
    names = [f"f{s}-{min(s + size, numel) - 1}" for s in range(0, numel, size)]
    return FeatureGroups(names, "block", shape, size)
