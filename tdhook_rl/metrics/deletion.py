"""Deletion and insertion curves (Petsiuk et al. 2018, RISE; Samek et al. 2017): replace the
top-k features by attribution with a baseline (deletion), or start from the baseline and
restore them (insertion), and read every target as k grows; next to each curve, the same
curve for random feature orderings (the chance level)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attributed import Attributed
from tdhook_rl.core.keys import read
from tdhook_rl.metrics._common import (
    Baseline,
    as_baseline,
    bind,
    check_chunk_size,
    check_k,
    generator,
    prepare,
    random_ranks,
    ranks,
)
from tdhook_rl.targets import Target


@dataclass
class CurveResult:
    """Deletion or insertion curves of every measured head.

    Attributes:
        mode: ``"deletion"`` or ``"insertion"``.
        ks: the numbers of features removed (inserted), ``(K,)``.
        fractions: ``ks / F``, the abscissa of the areas, ``(K,)``.
        values: per head, the head's target after removing (inserting) its own top-k
            features by ``|attribution|``, ``(K, *batch)``.
        random: per head, the same for random feature orderings, mean over ``n_random``
            orderings, ``(K, *batch)``.
        auc: per head, the trapezoid area under ``values`` over ``fractions``, ``(*batch)``.
        random_auc: per head, the area under ``random``, ``(*batch)``.
        agreement: per head, 1.0 where the greedy action (argmax of the ``agreement`` key)
            is the unperturbed one, ``(K, *batch)``; ``None`` without ``agreement``.
        random_agreement: the same for the random orderings (mean), or ``None``.
        perturbation: the perturbation model, in words, with its seed.
    """

    mode: Literal["deletion", "insertion"]
    ks: torch.Tensor
    fractions: torch.Tensor
    values: dict[str, torch.Tensor]
    random: dict[str, torch.Tensor]
    auc: dict[str, torch.Tensor]
    random_auc: dict[str, torch.Tensor]
    agreement: dict[str, torch.Tensor] | None
    random_agreement: dict[str, torch.Tensor] | None
    perturbation: str


class GreedyAgreement(Target):
    """1.0 where ``argmax(output[key])`` equals ``argmax(reference[key])`` (the greedy
    action of the unperturbed forward), else 0.0: one scalar per sample.

    Examples:
        >>> from tensordict import TensorDict
        >>> ref = TensorDict(logits=torch.tensor([[0.0, 1.0], [2.0, 0.0]]), batch_size=[2])
        >>> out = TensorDict(logits=torch.tensor([[0.0, 3.0], [0.0, 1.0]]), batch_size=[2])
        >>> GreedyAgreement("logits")(out, ref)
        tensor([1., 0.])
    """

    def __init__(self, key: NestedKey) -> None:
        self.key = key
        self.reference_keys = (key,)

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        now = read(output, self.key, self.who).argmax(-1)
        before = read(reference, self.key, self.who).argmax(-1)
        return (now == before).to(torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"GreedyAgreement({self.key!r})"


def deletion_curve(
    explained: Attributed,
    td: TensorDictBase,
    *,
    heads: Sequence[str] | str | None = None,
    ks: Sequence[int] | None = None,
    fractions: Sequence[float] | None = None,
    baseline: Baseline = 0.0,
    n_random: int = 8,
    seed: int = 0,
    agreement: NestedKey | None = None,
    chunk_size: int | None = None,
) -> CurveResult:
    """Removes each head's top-k features (by ``|attribution|``, replaced by ``baseline``) for
    every k at once and reads every target: a faithful attribution makes its target fall
    faster than random orderings do.

    All heads' orderings, all random orderings and all k go through the module as one
    stacked batch ``(H + n_random, K, *batch)``: one forward.

    Args:
        explained: the :class:`~tdhook_rl.Attributed` wrapper that wrote the attributions.
        td: its output (a rollout or a batch), holding the inputs, the attributions and the
            entries its targets read (the taken action).
        heads: the target names to measure (default: all the wrapper's targets).
        ks: the numbers of features to remove, each in ``0..F``; default ``0, 1, ..., F``
            (``F``: the features of all attributed inputs together).
        fractions: instead of ``ks``, fractions of ``F`` (rounded to the nearest count).
        baseline: what a removed feature becomes: a scalar, a tensor of the feature shape
            (or of the batch and feature shape), or ``{input_key: value}``.
        n_random: random orderings averaged for the chance curve.
        seed: seeds the random orderings (a generator of their own).
        agreement: a key of per-action scores (``"logits"``, ``"action_value"``) for the
            greedy-action agreement curves of discrete heads.
        chunk_size: at most this many perturbed copies of the batch per forward (default:
            all ``(H + n_random) * K`` in one); bounds memory for large inputs (pixels).

    Returns:
        A :class:`CurveResult`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, "input_x_gradient", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(8, 4), batch_size=[8]))
        >>> result = deletion_curve(explained, td)
        >>> result.values["value"].shape, result.auc["value"].shape
        (torch.Size([5, 8]), torch.Size([8]))
    """
    return _curve(
        "deletion",
        explained,
        td,
        heads,
        ks,
        fractions,
        baseline,
        n_random,
        seed,
        agreement,
        chunk_size,
    )


def insertion_curve(
    explained: Attributed,
    td: TensorDictBase,
    *,
    heads: Sequence[str] | str | None = None,
    ks: Sequence[int] | None = None,
    fractions: Sequence[float] | None = None,
    baseline: Baseline = 0.0,
    n_random: int = 8,
    seed: int = 0,
    agreement: NestedKey | None = None,
    chunk_size: int | None = None,
) -> CurveResult:
    """Starts from ``baseline`` and restores each head's top-k features for every k at once:
    a faithful attribution recovers the target faster than random orderings. Arguments as
    in :func:`deletion_curve`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, "ig", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(3, 4), batch_size=[3]))
        >>> result = insertion_curve(explained, td, ks=[0, 4])
        >>> torch.allclose(result.values["value"][1], td["state_value"].squeeze(-1))
        True
    """
    return _curve(
        "insertion",
        explained,
        td,
        heads,
        ks,
        fractions,
        baseline,
        n_random,
        seed,
        agreement,
        chunk_size,
    )


def _curve(mode, explained, td, heads, ks, fractions, baseline, n_random, seed, agreement, chunk):
    check_chunk_size(chunk)
    setting = prepare(explained, td, heads)
    n_features = setting.n_features
    k = _ks(ks, fractions, n_features)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random must be an int >= 1, got {n_random!r}")
    x, base = setting.x, as_baseline(baseline, setting)
    n_heads, batch = len(setting.heads), setting.batch
    if agreement is not None:
        if not isinstance(td.get(agreement, None), torch.Tensor):
            raise KeyError(
                f"agreement key {agreement!r} is not in the TensorDict: name the per-action "
                "scores the module writes (e.g. 'logits')"
            )
        targets = {**explained.engine.targets, "_agreement": GreedyAgreement(agreement)}
        setting.engine = bind(explained, td, targets)
    scores = torch.stack([setting.attributions[h].abs() for h in setting.heads])
    order = torch.cat(  # (H + R, *batch, F): each head's ranks, then the random ones
        [
            ranks(scores),
            random_ranks((n_random, *batch), n_features, generator(seed), x.device),
        ]
    )
    at = torch.tensor(k, device=x.device).reshape(1, -1, *[1] * (len(batch) + 1))
    chosen = order[:, None] < at  # (H + R, K, *batch, F): the k top-ranked features
    if mode == "deletion":
        values = torch.where(chosen, base, x)
    else:
        values = torch.where(chosen, x, base)
    out = setting.evaluate(values, chunk)  # (n_targets, H + R, K, *batch): one forward
    own = setting.head_rows(out[:, :n_heads])  # (H, K, *batch)
    chance = setting.head_values(out[:, n_heads:]).mean(1)  # (H, K, *batch)
    ks_t = torch.tensor(k, device=x.device)
    frac = ks_t.to(x.dtype) / max(n_features, 1)

    def area(curve: torch.Tensor) -> torch.Tensor:
        if len(k) < 2:
            return torch.zeros_like(curve[0])
        return torch.trapezoid(curve, x=frac, dim=0)

    result = CurveResult(
        mode=mode,
        ks=ks_t,
        fractions=frac,
        values={h: own[i] for i, h in enumerate(setting.heads)},
        random={h: chance[i] for i, h in enumerate(setting.heads)},
        auc={h: area(own[i]) for i, h in enumerate(setting.heads)},
        random_auc={h: area(chance[i]) for i, h in enumerate(setting.heads)},
        agreement=None,
        random_agreement=None,
        perturbation=(
            f"{mode} of the top-k features by |attribution| (ties in feature order), "
            f"{'removed' if mode == 'deletion' else 'kept'} features set to the baseline; "
            f"chance: {n_random} uniformly random orderings per sample, seed={seed}"
        ),
    )
    if agreement is not None:
        agree = out[-1]  # (H + R, K, *batch)
        result.agreement = {h: agree[i] for i, h in enumerate(setting.heads)}
        mean = agree[n_heads:].mean(0)
        result.random_agreement = {h: mean for h in setting.heads}
    return result


def _ks(ks: Sequence[int] | None, fractions: Sequence[float] | None, n: int) -> list[int]:
    if ks is not None and fractions is not None:
        raise ValueError("give ks or fractions, not both")
    if fractions is not None:
        for f in fractions:
            if not 0.0 <= float(f) <= 1.0:
                raise ValueError(f"fractions must lie in [0, 1], got {f!r}")
        return [round(float(f) * n) for f in fractions]
    if ks is None:
        return list(range(n + 1))
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty: give at least one number of features")
    return [check_k(k, n) for k in ks]
