"""Which rows an attribution is summarised in, and each row's share of it: one row per
feature for small inputs, one per group of features for large ones (image channels, blocks
of a single-channel image, board planes, blocks of a long vector), per agent or pooled over
agents for a multi-agent input. The callback logs one scalar per row; the plots of
:mod:`tdhook_rl.viz` draw one row each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["MAX_ROWS", "SPATIAL_BLOCKS", "FeatureGroups", "feature_groups"]

#: inputs with at most this many features are shown feature by feature
MAX_ROWS = 64
#: a single-channel image is cut into this many bands of rows times this many of columns
SPATIAL_BLOCKS = 3


@dataclass(frozen=True)
class FeatureGroups:
    """How the per-sample features of one input are grouped into rows.

    Attributes:
        names: one name per row.
        kind: ``"feature"`` (one row per feature), ``"leading"`` (one row per index of the
            first per-sample dimension: an image's channels, a board's planes), ``"block"``
            (contiguous blocks of a long vector), ``"spatial"`` (a grid of blocks of a
            single-channel image ``(1, H, W)``) or ``"agents"`` (the first per-sample
            dimension is the agent; ``inner`` groups each agent's features).
        shape: the per-sample shape the groups were made for.
        block: the features per block (``"block"``); the bands per side (``"spatial"``).
        inner: the groups of one agent's features (``"agents"`` only).
        pooled: ``"agents"`` only: one row per inner row, summed over the agents, instead
            of one row per agent and inner row.
    """

    names: list[str]
    kind: str
    shape: tuple[int, ...]
    block: int = 1
    inner: FeatureGroups | None = None
    pooled: bool = False

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
        if self.kind == "agents" and self.inner is not None:
            agents = self.shape[0]
            # (N, A, *f) -> (N * A, *f) -> (N, A, rows)
            rows = self.inner(values.reshape(n * agents, *self.shape[1:])).reshape(n, agents, -1)
            return rows.sum(1) if self.pooled else rows.reshape(n, -1)
        if self.kind == "spatial":
            image = values.reshape(n, *self.shape[-2:])
            # (N, H, W) -> bands of rows, each summed to (N, W) -> cells, each (N,)
            bands = [b.sum(-2) for b in torch.tensor_split(image, self.block, dim=-2)]
            cells = [c.sum(-1) for b in bands for c in torch.tensor_split(b, self.block, dim=-1)]
            return torch.stack(cells, -1)
        padded = torch.nn.functional.pad(flat, (0, self.block * len(self.names) - flat.shape[1]))
        return padded.reshape(n, len(self.names), self.block).sum(-1)

    def shares(self, values: torch.Tensor) -> torch.Tensor:
        """Each row's share of the mean absolute value of ``values`` ``[N, *shape]``
        (summing to 1): what a head attends to, per feature or group."""
        magnitude = self(values.abs()).mean(0)
        return magnitude / magnitude.sum().clamp_min(1e-12)


def _bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """The ``[first, last]`` indices of ``torch.tensor_split(range(size), parts)``."""
    return [(int(p[0]), int(p[-1])) for p in torch.tensor_split(torch.arange(size), parts)]


def _spatial(shape: tuple[int, ...], prefix: str) -> FeatureGroups:
    height, width = shape[-2:]
    parts = min(SPATIAL_BLOCKS, height, width)
    names = [
        f"{prefix}rows {r0}-{r1} cols {c0}-{c1}"
        for r0, r1 in _bounds(height, parts)
        for c0, c1 in _bounds(width, parts)
    ]
    return FeatureGroups(names, "spatial", shape, parts)


def feature_groups(
    shape: Sequence[int],
    feature_names: Sequence[str] | None = None,
    max_rows: int = MAX_ROWS,
    *,
    agent_dims: int = 0,
    pool_agents: bool = False,
) -> FeatureGroups:
    """The rows for an input of per-sample ``shape``.

    Args:
        shape: the input's per-sample shape, e.g. ``(9,)``, ``(3, 84, 84)``, ``(18, 8, 8)``,
            or ``(n_agents, 3)`` for a multi-agent input (with ``agent_dims=1``).
        feature_names: one name per feature (used as given, however many), or one per index
            of the first dimension (e.g. a board's plane names); for a multi-agent input,
            the names of one agent's features.
        max_rows: at most this many features are shown one by one without names; larger
            inputs are grouped by their first dimension (when it has at most ``max_rows``
            entries; a single-channel image ``(1, H, W)`` is cut into a grid of
            :data:`SPATIAL_BLOCKS` x :data:`SPATIAL_BLOCKS` blocks instead, which would
            otherwise be one row holding everything), else in ``max_rows`` contiguous blocks.
        agent_dims: ``1`` when the first per-sample dimension is the agent (TorchRL's MARL
            layout, ``("agents", "observation")``): rows are named ``agent{i}/{feature}``.
        pool_agents: with ``agent_dims=1``, sum each feature over the agents: one row per
            feature instead of one per agent and feature.

    Examples:
        >>> feature_groups((9,)).names[:2]
        ['f0', 'f1']
        >>> feature_groups((3, 84, 84)).names
        ['channel 0', 'channel 1', 'channel 2']
        >>> feature_groups((1, 84, 84)).names[:2]
        ['rows 0-27 cols 0-27', 'rows 0-27 cols 28-55']
        >>> feature_groups((2, 3), ["x", "v", "t"], agent_dims=1).names[:4]
        ['agent0/x', 'agent0/v', 'agent0/t', 'agent1/x']
        >>> groups = feature_groups((256,), max_rows=4)
        >>> groups.names, groups(torch.ones(1, 256)).tolist()
        (['f0-63', 'f64-127', 'f128-191', 'f192-255'], [[64.0, 64.0, 64.0, 64.0]])
    """
    shape = tuple(int(s) for s in shape)
    if agent_dims not in (0, 1):
        raise ValueError(f"agent_dims must be 0 or 1 (one agent dimension), got {agent_dims!r}")
    if agent_dims:
        if not shape:
            raise ValueError("a multi-agent input needs an agent dimension; its shape is ()")
        inner = feature_groups(shape[1:], feature_names, max_rows)
        names = (
            list(inner.names)
            if pool_agents
            else [f"agent{a}/{name}" for a in range(shape[0]) for name in inner.names]
        )
        return FeatureGroups(names, "agents", shape, inner=inner, pooled=pool_agents)
    numel = math.prod(shape)
    single_channel_image = len(shape) == 3 and shape[0] == 1 and numel > max_rows
    if feature_names is not None:
        names = list(feature_names)
        if len(names) == numel:
            return FeatureGroups(names, "feature", shape)
        if single_channel_image and len(names) == 1:
            return _spatial(shape, f"{names[0]} ")
        if len(shape) >= 2 and len(names) == shape[0]:
            return FeatureGroups(names, "leading", shape)
        leading = f" or one per index of its first dimension ({shape[0]})" if len(shape) > 1 else ""
        raise ValueError(
            f"{len(names)} feature names for an input of shape {shape}: give one per feature "
            f"({numel}){leading}"
        )
    if numel <= max_rows:
        return FeatureGroups([f"f{i}" for i in range(numel)], "feature", shape)
    if single_channel_image:
        return _spatial(shape, "")
    if len(shape) >= 2 and shape[0] <= max_rows:
        return FeatureGroups([f"channel {i}" for i in range(shape[0])], "leading", shape)
    size = math.ceil(numel / max_rows)
    names = [f"f{s}-{min(s + size, numel) - 1}" for s in range(0, numel, size)]
    return FeatureGroups(names, "block", shape, size)
