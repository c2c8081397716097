"""What the perturbation methods share: feature groups ("players"), perturbed batches
evaluated in chunks without gradients, and the base class of the coalition methods (exact
Shapley, Shapley value sampling, KernelSHAP, LIME).

Every method describes its perturbations as boolean masks ``(P, *feature)`` per input key,
True where the feature is replaced by its baseline; :func:`evaluate_masked` builds the
perturbed inputs ``(P, *batch, *feature)`` and evaluates every target on them in one
forward (one per ``chunk_size`` perturbations).

Several input keys are perturbed *jointly*: the groups of all keys form one set of players
(those of the first key, then those of the next, ...), so a coalition can drop features of
several keys at once, and a method that removes one group at a time (occlusion, feature
ablation) leaves every other key at its value.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.baselines import (
    Baselines,
    baseline_keys,
    check_baseline_keys,
    normalize_baselines,
    resolve_baseline,
)
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.core.keys import as_key

FeatureMask = torch.Tensor | Mapping[NestedKey, torch.Tensor] | None
Background = torch.Tensor | Mapping[NestedKey, torch.Tensor] | None


def describe(spec: Any) -> str:
    """A short repr: tensors by their shape (a mask or background repr stays one line)."""
    if isinstance(spec, torch.Tensor):
        return f"tensor(shape={tuple(spec.shape)})"
    if isinstance(spec, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in spec.items()) + "}"
    return repr(spec)


def check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


def check_n_samples(n_samples: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    return n_samples


def per_key(spec: Any, what: str) -> Any:
    """A mapping's keys in canonical form; anything else as given."""
    if isinstance(spec, Mapping):
        return {as_key(k, f"{what} mapping key"): v for k, v in spec.items()}
    return spec


def check_mapping_keys(spec: Any, inputs: Sequence[NestedKey], what: str) -> None:
    if isinstance(spec, Mapping):
        for key in spec:
            if key not in inputs:
                raise ValueError(
                    f"the {what} mapping names {key!r}, which is not an input; the inputs are "
                    f"{list(inputs)}"
                )


@dataclass
class Players:
    """Feature groups of every input key, numbered jointly.

    Attributes:
        keys: the input keys, in order.
        shapes: each key's per-sample feature shape.
        labels: each key's group of every feature, ``(F_k,)`` long, numbered from
            ``offsets[k]``.
        members: each key's membership matrix ``(G_k, F_k)`` bool.
        offsets: the number of the first group of each key.
        n: the number of groups over all keys.
    """

    keys: list[NestedKey]
    shapes: dict[NestedKey, torch.Size]
    labels: dict[NestedKey, torch.Tensor]
    members: dict[NestedKey, torch.Tensor]
    offsets: dict[NestedKey, int]
    n: int

    def off_masks(self, present: torch.Tensor) -> dict[NestedKey, torch.Tensor]:
        """``present`` ``(P, n)`` bool (True: the group keeps its value) -> per key the
        features replaced by the baseline, ``(P, *feature)`` bool."""
        out = {}
        for key in self.keys:
            start, size = self.offsets[key], self.members[key].shape[0]
            absent = ~present[:, start : start + size]  # (P, G_k)
            # each feature is in exactly one group: pick its group's column, (P, F_k)
            out[key] = absent[:, self.labels[key] - start].reshape(-1, *self.shapes[key])
        return out

    def spread(self, values: torch.Tensor) -> dict[NestedKey, torch.Tensor]:
        """Group values ``(n_t, *batch, n)`` -> per key ``(n_t, *batch, *feature)``: every
        feature carries its group's value (as captum does)."""
        return {
            k: values[..., self.labels[k]].reshape(*values.shape[:-1], *self.shapes[k])
            for k in self.keys
        }


def make_players(
    feature_mask: FeatureMask,
    inputs: Mapping[NestedKey, torch.Tensor],
    batch_dims: int,
) -> Players:
    """The groups of ``feature_mask`` (``None``: one group per feature; a tensor for every
    input, or a mapping ``key -> tensor``; integer labels broadcastable to the feature shape;
    equal labels form one group, any values)."""
    shapes, labels, members, offsets, n = {}, {}, {}, {}, 0
    for key, x in inputs.items():
        shape = x.shape[batch_dims:]
        numel = math.prod(shape)
        mask = feature_mask.get(key) if isinstance(feature_mask, Mapping) else feature_mask
        if mask is None:
            local = torch.arange(numel, device=x.device)
            size = numel
        else:
            if not isinstance(mask, torch.Tensor) or mask.is_floating_point() or mask.is_complex():
                raise TypeError(
                    f"feature_mask for input {key!r} must be an integer tensor of group labels, "
                    f"got {mask!r}"
                )
            try:
                full = mask.to(x.device).expand(shape)
            except RuntimeError:
                raise ValueError(
                    f"feature_mask for input {key!r} has shape {tuple(mask.shape)}, which does "
                    f"not broadcast to the input's feature shape {tuple(shape)}; give one label "
                    "per feature, or a shape that broadcasts (e.g. (C, 1, 1) for channels)."
                ) from None
            # labels -> 0..G_k-1 in sorted order (one host sync; the method caches the groups)
            _, local = torch.unique(full.reshape(-1), return_inverse=True)
            size = int(local.max()) + 1 if numel else 0
        shapes[key] = shape
        labels[key] = local + n
        members[key] = local[None, :] == torch.arange(size, device=x.device)[:, None]
        offsets[key] = n
        n += size
    return Players(list(inputs), shapes, labels, members, offsets, n)


def evaluate_masked(
    engine: GradientEngine,
    inputs: Mapping[NestedKey, torch.Tensor],
    baselines: Mapping[NestedKey, torch.Tensor],
    off: Mapping[NestedKey, torch.Tensor],
    chunk_size: int | None = None,
    n_background: int = 0,
) -> torch.Tensor:
    """Every target on every perturbation, without gradients.

    Args:
        engine: the engine bound to the batch.
        inputs: each ``(*batch, *feature)``.
        baselines: each ``(*batch, *feature)`` (broadcastable), or with ``n_background``
            ``(S, *[1] * batch_dims, *feature)``: background samples.
        off: for the perturbed keys, ``(P, *feature)`` bool, True where the feature takes its
            baseline; keys absent here keep their value.
        chunk_size: at most this many perturbations per forward.
        n_background: ``S`` when the baselines are background samples: the targets are
            averaged over them (the marginal expectation).

    Returns:
        ``(n_targets, P, *batch)``.
    """
    batch = engine.batch_shape
    n_p = next(iter(off.values())).shape[0]
    chunk = chunk_size or max(n_p, 1)
    extra = (n_background,) if n_background else ()
    outs = []
    with torch.no_grad():
        for start in range(0, n_p, chunk):
            c = min(chunk, n_p - start)
            values = {}
            for key, x in inputs.items():
                if key not in off:
                    values[key] = x.expand(c, *extra, *x.shape)
                    continue
                mask = off[key][start : start + c]  # (c, *f)
                # (c, *f) -> (c, [1,] *[1] * batch_dims, *f)
                mask = mask.reshape(c, *[1] * (len(extra) + len(batch)), *mask.shape[1:])
                value = torch.where(mask, baselines[key], x)  # (c, [S,] *batch, *f)
                values[key] = value.expand(c, *extra, *x.shape)
            y = engine.evaluate(values, lead=(c, *extra))  # (n_t, c, [S,] *batch)
            outs.append(y.mean(2) if n_background else y)
    if not outs:  # no perturbation at all
        like = next(iter(inputs.values()))
        return like.new_zeros(engine.n_targets, 0, *batch)
    return torch.cat(outs, 1)


class CoalitionMethod(AttributionMethod):
    """Base of the methods that evaluate coalitions of feature groups (present groups keep
    their value, absent ones take the baseline) and combine the target values per group.

    Subclasses give :meth:`coalitions` and :meth:`combine`.
    """

    def __init__(
        self,
        feature_mask: FeatureMask = None,
        baseline: Baselines = 0.0,
        background: Background = None,
        chunk_size: int | None = None,
    ) -> None:
        self.feature_mask = per_key(feature_mask, "feature_mask")
        self.baseline = normalize_baselines(baseline)
        self.background = per_key(background, "background")
        if self.background is not None and not isinstance(self.background, Mapping | torch.Tensor):
            raise TypeError(
                f"background must be a tensor [S, *feature] of samples or a mapping input key "
                f"-> tensor, got {background!r}"
            )
        self.chunk_size = check_chunk_size(chunk_size)
        self.context_keys = baseline_keys(self.baseline)
        self._players: dict[Any, Players] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_players": {}}

    def check_inputs(self, inputs: Sequence[NestedKey]) -> None:
        check_baseline_keys(self.baseline, inputs)
        check_mapping_keys(self.feature_mask, inputs, "feature_mask")
        check_mapping_keys(self.background, inputs, "background")

    def check(self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase) -> None:
        players = self.players(inputs, td.batch_dims)
        self.check_players(players)
        self.resolve(inputs, td, td.batch_dims)

    def check_players(self, players: Players) -> None:
        """Refuses group counts the method cannot handle (exact Shapley: at most 16)."""

    def players(self, inputs: Mapping[NestedKey, torch.Tensor], batch_dims: int) -> Players:
        """The groups for these inputs' feature shapes (computed once per shape and device)."""
        slot = tuple((k, tuple(x.shape[batch_dims:]), x.device) for k, x in inputs.items())
        if slot not in self._players:
            self._players[slot] = make_players(self.feature_mask, inputs, batch_dims)
        return self._players[slot]

    def resolve(
        self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase, batch_dims: int
    ) -> tuple[dict[NestedKey, torch.Tensor], int]:
        """The baselines of every input, and the number of background samples (0: none)."""
        if self.background is None:
            return {k: resolve_baseline(self.baseline, k, x, td) for k, x in inputs.items()}, 0
        out, sizes = {}, set()
        for key, x in inputs.items():
            bg = (
                self.background.get(key)
                if isinstance(self.background, Mapping)
                else self.background
            )
            feature = x.shape[batch_dims:]
            if bg is None:  # an input the mapping does not name: its baseline, as one sample
                out[key] = resolve_baseline(self.baseline, key, x, td)[None]
                continue
            if not isinstance(bg, torch.Tensor) or bg.ndim < 1 or bg.shape[1:] != feature:
                shape = tuple(bg.shape) if isinstance(bg, torch.Tensor) else bg
                raise ValueError(
                    f"background for input {key!r} must be samples shaped [S, *feature] = "
                    f"[S, {', '.join(map(str, feature))}], got {shape}"
                )
            sizes.add(bg.shape[0])
            # (S, *f) -> (S, *[1] * batch_dims, *f)
            out[key] = bg.to(x).reshape(bg.shape[0], *[1] * batch_dims, *feature)
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                f"background samples of every input must be equally many (and at least one), "
                f"got {sorted(sizes)}"
            )
        n = sizes.pop()
        for key, b in out.items():  # unnamed inputs' single baseline, repeated per sample
            if b.shape[0] != n:
                out[key] = b.expand(n, *b.shape[1:])
        return out, n

    @abstractmethod
    def coalitions(self, n_groups: int, device: torch.device) -> torch.Tensor:
        """The coalitions to evaluate, ``(P, n_groups)`` bool (True: the group is present)."""

    @abstractmethod
    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target values ``(n_t, P, *batch)`` on ``present`` -> per group ``(n_t, *batch, G)``
        and the completeness delta ``(n_t, *batch)`` (or ``None``)."""

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        batch_dims = len(engine.batch_shape)
        players = self.players(inputs, batch_dims)
        self.check_players(players)
        baselines, n_background = self.resolve(inputs, engine.context, batch_dims)
        device = next(iter(inputs.values())).device
        present = self.coalitions(players.n, device)  # (P, G)
        off = players.off_masks(present)  # per key (P, *f)
        values = evaluate_masked(engine, inputs, baselines, off, self.chunk_size, n_background)
        groups, delta = self.combine(present, values)
        return AttributionResult(players.spread(groups), delta)


def random_permutations(
    n: int, size: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``(n, size)`` random permutations of ``range(size)``, drawn from ``generator``."""
    return torch.rand(n, size, generator=generator, device=device).argsort(-1)
