"""Occlusion (Zeiler and Fergus, 2014): sliding windows of the input set to a baseline."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution._perturb import (
    check_chunk_size,
    check_mapping_keys,
    describe,
    evaluate_masked,
    per_key,
)
from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.baselines import (
    Baselines,
    baseline_keys,
    check_baseline_keys,
    normalize_baselines,
    resolve_baseline,
)
from tdhook_rl.attribution.engine import GradientEngine

Shape = int | Sequence[int]


def _as_shape(spec: Shape, ndim: int, what: str, key: NestedKey) -> tuple[int, ...]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        shape: tuple[int, ...] = (spec,) * ndim
    elif isinstance(spec, Sequence):
        shape = tuple(spec)
    else:
        raise TypeError(f"{what} for input {key!r} must be an integer or a tuple, got {spec!r}")
    if len(shape) != ndim or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ValueError(
            f"{what} for input {key!r} is {spec!r}; give one integer per feature dimension "
            f"({ndim} of them)"
        )
    if any(s < 1 for s in shape):
        raise ValueError(f"{what} for input {key!r} must be positive, got {spec!r}")
    return shape


def windows(
    feature: Sequence[int], window: Sequence[int], strides: Sequence[int], device: torch.device
) -> torch.Tensor:
    """The window positions, as captum places them: along each dimension at ``0, s, 2s, ...``
    while the window's start is before ``size - window`` plus the last one, which the edge
    cuts (``ceil((size - window) / s) + 1`` positions).

    Returns:
        ``(n_windows, *feature)`` bool, True inside each window.

    Examples:
        >>> windows((5,), (2,), (2,), torch.device("cpu")).int().tolist()
        [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    """
    ndim = len(feature)
    factors = []
    for i, (size, w, s) in enumerate(zip(feature, window, strides, strict=True)):
        starts = torch.arange(math.ceil((size - w) / s) + 1, device=device) * s
        cells = torch.arange(size, device=device)
        inside = (cells >= starts[:, None]) & (cells < starts[:, None] + w)  # (n_i, size)
        # (n_i, size) at positions i and ndim + i of a (n_0, ..., n_d-1, f_0, ..., f_d-1) grid
        view = [1] * (2 * ndim)
        view[i], view[ndim + i] = inside.shape
        factors.append(inside.reshape(view))
    grid = functools.reduce(operator.and_, factors)
    return grid.reshape(-1, *feature)


class Occlusion(AttributionMethod):
    """Mean over the windows covering a feature of ``f(x) - f(x with the window occluded)``.

    A window of shape ``window`` slides over the feature dimensions with ``strides`` (captum's
    ``Occlusion``: ``sliding_window_shapes`` and ``strides``); each placement sets the features
    inside it to the baseline, and every feature receives the mean change of the target over
    the placements that cover it. All placements (of every input key, one key occluded at a
    time with the others at their values) and the input itself go through one forward (one
    per ``chunk_size`` placements), for all samples and targets.

    Args:
        window: the window's shape, one size per feature dimension of the input, or a mapping
            ``input key -> shape`` (every input needs one).
        strides: the step between placements: an integer for every dimension, one per
            dimension, or a mapping ``input key -> strides``; at most the window's size
            (along dimensions where the window is smaller than the input).
        baseline: what occluded features take: a number, a tensor, a key of the input
            TensorDict, or a mapping ``input key -> one of these``.
        chunk_size: at most this many placements per forward; ``None`` for all at once.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(9, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, Occlusion(window=(3,), strides=3),
        ...                            inputs=["observation"], targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.randn(5, 9), batch_size=[5]))
        >>> out["attribution", "value", "observation"].shape
        torch.Size([5, 9])
    """

    def __init__(
        self,
        window: Shape | Mapping[NestedKey, Shape],
        strides: Shape | Mapping[NestedKey, Shape] = 1,
        baseline: Baselines = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        self.window = per_key(window, "window")
        self.strides = per_key(strides, "strides")
        self.baseline = normalize_baselines(baseline)
        self.chunk_size = check_chunk_size(chunk_size)
        self.context_keys = baseline_keys(self.baseline)
        self._windows: dict[Any, torch.Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_windows": {}}

    def check_inputs(self, inputs: Sequence[NestedKey]) -> None:
        check_baseline_keys(self.baseline, inputs)
        check_mapping_keys(self.strides, inputs, "strides")
        check_mapping_keys(self.window, inputs, "window")
        if isinstance(self.window, Mapping):
            missing = [k for k in inputs if k not in self.window]
            if missing:
                raise ValueError(f"the window mapping gives no window for inputs {missing}")

    def check(self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase) -> None:
        for key, x in inputs.items():
            self.placements(key, x.shape[td.batch_dims :], x.device)
            resolve_baseline(self.baseline, key, x, td)

    def placements(self, key: NestedKey, feature: torch.Size, device: torch.device) -> torch.Tensor:
        """The windows of input ``key``, ``(n_windows, *feature)`` bool (built once per shape)."""
        slot = (key, tuple(feature), device)
        if slot in self._windows:
            return self._windows[slot]
        window = self.window[key] if isinstance(self.window, Mapping) else self.window
        strides = self.strides.get(key, 1) if isinstance(self.strides, Mapping) else self.strides
        w = _as_shape(window, len(feature), "window", key)
        s = _as_shape(strides, len(feature), "strides", key)
        if any(wi > fi for wi, fi in zip(w, feature, strict=True)):
            raise ValueError(
                f"the occlusion window {w} of input {key!r} is larger than its feature shape "
                f"{tuple(feature)}; give a window at most that large along every dimension."
            )
        if any(si > wi and wi < fi for si, wi, fi in zip(s, w, feature, strict=True)):
            raise ValueError(
                f"strides {s} of input {key!r} exceed the window {w}: features between windows "
                "would never be occluded; give strides at most the window's size."
            )
        self._windows[slot] = windows(feature, w, s, device)
        return self._windows[slot]

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        batch_dims = len(engine.batch_shape)
        baselines = {
            k: resolve_baseline(self.baseline, k, x, engine.context) for k, x in inputs.items()
        }
        masks = {k: self.placements(k, x.shape[batch_dims:], x.device) for k, x in inputs.items()}
        counts = [m.shape[0] for m in masks.values()]
        total = sum(counts)
        # one row per placement of every key (the other keys unoccluded), then the input itself
        off, start = {}, 0
        for key, m in masks.items():
            rows = m.new_zeros(total + 1, *m.shape[1:])
            rows[start : start + m.shape[0]] = m
            off[key] = rows
            start += m.shape[0]
        values = evaluate_masked(engine, inputs, baselines, off, self.chunk_size)
        gains = values[:, -1:] - values[:, :-1]  # (n_t, P, *batch): f(x) - f(occluded)
        attributions, start = {}, 0
        for key, m in masks.items():
            flat = m.flatten(1).to(values.dtype)  # (P_k, F_k)
            part = gains[:, start : start + m.shape[0]].movedim(1, -1)  # (n_t, *batch, P_k)
            # mean over the placements covering each feature (each is covered at least once)
            mean = (part @ flat) / flat.sum(0)  # (n_t, *batch, F_k)
            attributions[key] = mean.reshape(*mean.shape[:-1], *m.shape[1:])
            start += m.shape[0]
        return AttributionResult(attributions)

    def __repr__(self) -> str:
        return (
            f"Occlusion(window={self.window!r}, strides={self.strides!r}, "
            f"baseline={describe(self.baseline)}, chunk_size={self.chunk_size})"
        )
