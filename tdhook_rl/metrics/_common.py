"""What every metric shares: reading an :class:`~tdhook_rl.Attributed`'s results back out of a
TensorDict, flattening the attributed inputs into one feature vector per sample, evaluating
every target on stacked perturbations in one forward, and orderings of features."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.core.grad_mode import gradients_enabled
from tdhook_rl.core.keys import key_tuple
from tdhook_rl.targets import Target

Baseline = float | torch.Tensor | Mapping[NestedKey, float | torch.Tensor]


@dataclass
class Setting:
    """One batch of an explained module, flattened for the metrics.

    Attributes:
        explained: the :class:`~tdhook_rl.Attributed` whose results are measured.
        heads: the measured target names, in order.
        head_index: for each head, its row in the engine's outputs.
        x: the attributed inputs, concatenated per sample, ``(*batch, F)``.
        attributions: per head ``(*batch, F)``, in the order of ``x``.
        shapes: the feature shape of each input key, to split ``x`` back.
        engine: the explained module's engine bound to this batch's context and reference
            (the taken action), so that perturbed inputs keep the original references.
    """

    explained: Attributed
    heads: list[str]
    head_index: list[int]
    x: torch.Tensor
    attributions: dict[str, torch.Tensor]
    shapes: dict[NestedKey, torch.Size]
    engine: GradientEngine

    @property
    def batch(self) -> torch.Size:
        return self.x.shape[:-1]

    @property
    def n_features(self) -> int:
        return self.x.shape[-1]

    def split(self, flat: torch.Tensor) -> dict[NestedKey, torch.Tensor]:
        """``(*lead, F)`` -> one entry per input key, ``(*lead, *feature)``."""
        out, start = {}, 0
        for key, shape in self.shapes.items():
            size = math.prod(shape)
            out[key] = flat[..., start : start + size].reshape(*flat.shape[:-1], *shape)
            start += size
        return out

    def evaluate(self, flat: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Every target of the engine at the inputs ``flat`` ``(*lead, *batch, F)``, in one
        forward (or one per ``chunk_size`` perturbed copies of the batch):
        ``(n_targets, *lead, *batch)``."""
        lead = tuple(flat.shape[: flat.ndim - 1 - len(self.batch)])
        n = math.prod(lead)
        with torch.no_grad():
            if chunk_size is None or n <= chunk_size:
                return self.engine.evaluate(self.split(flat), lead)
            rows = flat.reshape(n, *flat.shape[len(lead) :])  # (*lead, ...) -> (n, ...)
            parts = [
                self.engine.evaluate(self.split(part), (part.shape[0],))
                for part in rows.split(chunk_size)
            ]
            out = torch.cat(parts, 1)  # (n_targets, n, *batch)
            return out.reshape(out.shape[0], *lead, *self.batch)

    def head_rows(self, out: torch.Tensor) -> torch.Tensor:
        """``(n_targets, H, ...)`` -> ``(H, ...)``: head ``h``'s target on slice ``h``."""
        index = torch.tensor(self.head_index, device=out.device)
        rows = out.index_select(0, index)  # (H, H, ...)
        return rows.diagonal(dim1=0, dim2=1).movedim(-1, 0)

    def head_values(self, out: torch.Tensor) -> torch.Tensor:
        """``(n_targets, ...)`` -> ``(H, ...)``: the measured heads' rows."""
        return out[torch.tensor(self.head_index, device=out.device)]

    def attribute(self, flat: torch.Tensor, engine: GradientEngine | None = None) -> torch.Tensor:
        """Re-runs the explained method at ``flat`` ``(*lead, *batch, F)``, all targets in one
        pass (the lead dimensions join the batch): ``(H, *lead, *batch, F)``."""
        lead = tuple(flat.shape[: flat.ndim - 1 - len(self.batch)])
        base = engine if engine is not None else self.engine
        engine = base.expand(*lead) if lead else base
        with gradients_enabled():
            result = self.explained.method.attribute(engine, self.split(flat.detach()))
        parts = [
            result.attributions[k].flatten(result.attributions[k].ndim - len(s))
            if len(s)
            else result.attributions[k][..., None]
            for k, s in self.shapes.items()
        ]
        flat_attr = torch.cat(parts, -1).detach()  # (n_targets, *lead, *batch, F)
        return self.head_values(flat_attr)


def prepare(
    explained: Attributed, td: TensorDictBase, heads: Sequence[str] | str | None = None
) -> Setting:
    """Reads ``explained``'s inputs and attributions for ``heads`` from ``td`` (the output of
    ``explained``, e.g. a rollout) and binds its engine to ``td``'s batch."""
    if not isinstance(explained, Attributed):
        raise TypeError(
            f"metrics measure an Attributed wrapper's results; got {type(explained).__name__}. "
            "Wrap the module: thr.Attributed(module, method, inputs=[...], targets={...})."
        )
    if explained.sample_dims is not None and explained.sample_dims != td.batch_dims:
        raise ValueError("metrics need every batch dimension to be a sample (sample_dims=None)")
    names = list(explained.targets)
    if heads is None:
        heads = names
    elif isinstance(heads, str):
        heads = [heads]
    heads = list(heads)
    if not heads:
        raise ValueError(f"heads is empty: name at least one of {names}")
    for head in heads:
        if head not in names:
            raise KeyError(f"head {head!r} is not a target of the wrapper (its targets: {names})")
    root = key_tuple(explained.out_key)
    batch = td.batch_size
    xs, shapes = [], {}
    for key in explained.inputs:
        value = td.get(key, None)
        if not isinstance(value, torch.Tensor):
            raise KeyError(f"input {key!r} is not in the TensorDict; pass the explained batch")
        shapes[key] = value.shape[len(batch) :]
        xs.append(value.detach().reshape(*batch, -1))
    attributions = {}
    for head in heads:
        parts = []
        for key in explained.inputs:
            value = td.get((*root, head, *key_tuple(key)), None)
            if not isinstance(value, torch.Tensor):
                raise KeyError(
                    f"no attribution for head {head!r} and input {key!r} in the TensorDict "
                    f"(expected at {(*root, head, *key_tuple(key))!r}); run the Attributed "
                    "wrapper on it first: td = explained(td)."
                )
            if value.shape != (*batch, *shapes[key]):
                raise ValueError(
                    f"the attribution of head {head!r} to {key!r} has shape "
                    f"{tuple(value.shape)}, the input {tuple((*batch, *shapes[key]))}"
                )
            parts.append(value.detach().reshape(*batch, -1))
        flat = torch.cat(parts, -1)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError(
                f"the attribution of head {head!r} has non-finite values (NaN or inf); "
                "no metric can rank its features"
            )
        attributions[head] = flat
    x = torch.cat(xs, -1)
    engine = bind(explained, td, explained.engine.targets)
    index = [names.index(h) for h in heads]
    return Setting(explained, heads, index, x, attributions, shapes, engine)


def bind(
    explained: Attributed, td: TensorDictBase, targets: Mapping[str, Target]
) -> GradientEngine:
    """An engine over ``targets`` bound to ``td``'s context (the module's other inputs) and
    reference (the entries of the original forward the targets read)."""
    context_keys = [k for k in explained.in_keys if k not in explained.inputs]
    context_keys += [k for k in explained.method.context_keys if k not in context_keys]
    reference_keys = [k for t in targets.values() for k in t.reference_keys]
    context = td.select(*context_keys, strict=False).detach().clone()
    reference = td.select(*reference_keys, strict=False).detach().clone()
    engine = GradientEngine(explained.engine.module, targets, explained.engine.strategy)
    return engine.at(context, reference)


def as_baseline(baseline: Baseline, setting: Setting) -> torch.Tensor:
    """``baseline`` as a flat ``(F,)`` or ``(*batch, F)`` tensor beside ``setting.x``."""
    x = setting.x
    if isinstance(baseline, Mapping):
        parts = []
        for key, shape in setting.shapes.items():
            if key not in baseline:
                raise KeyError(f"baseline has no entry for input {key!r}")
            value = torch.as_tensor(baseline[key], dtype=x.dtype, device=x.device)
            parts.append(value.expand(*setting.batch, *shape).reshape(*setting.batch, -1))
        return torch.cat(parts, -1)
    value = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if value.ndim == 0 or value.shape == x.shape[-1:]:
        return value.expand(x.shape[-1:]) if value.ndim else value.expand(x.shape)
    if len(setting.shapes) == 1:
        shape = next(iter(setting.shapes.values()))
        try:
            return value.expand(*setting.batch, *shape).reshape(x.shape)
        except RuntimeError:
            pass
    raise ValueError(
        f"baseline of shape {tuple(value.shape)} does not match the inputs (features "
        f"{[tuple(s) for s in setting.shapes.values()]}, batch {tuple(setting.batch)}); give a "
        "scalar, a tensor of the feature shape, or a mapping input key -> tensor"
    )


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """The rank of each feature when sorted by decreasing ``scores`` (0: the largest); ties
    keep the feature order. ``(..., F)`` -> ``(..., F)``, int64."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    return torch.argsort(order, dim=-1)


def random_ranks(shape: tuple[int, ...], n_features: int, generator: torch.Generator, device):
    """Uniformly random feature ranks ``(*shape, F)``, one permutation per row."""
    noise = torch.rand((*shape, n_features), generator=generator)
    return torch.argsort(noise, dim=-1).to(device)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (draws are moved to the inputs' device)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def check_k(k: int, n_features: int, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{what} must be an int, got {k!r}")
    if not 0 <= k <= n_features:
        raise ValueError(
            f"{what}={k} is out of range: the inputs have {n_features} features, so "
            f"0 <= {what} <= {n_features}"
        )
    return k
