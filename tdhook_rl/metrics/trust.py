"""One comparable deletion (insertion) number per head, over *groups* of features: the
"which attributions to trust" score of the report, the callback and the benchmark tables.

Features are removed in groups (all planes of a board square together, or each feature on its
own), ordered by each group's summed ``|attribution|``. The curve is the distance of the head's
value to where it ends, normalized by the distance at the start, averaged over the samples:

* deletion: ``d(k) = |f(x with the top-k groups removed) - f(baseline)|``; starts at
  ``|f(x) - f(baseline)|`` and ends at 0;
* insertion: ``d(k) = |f(baseline with the top-k groups restored) - f(x)|``; the same ends.

``curve(k) = mean_samples d(k) / mean_samples d(0)`` starts at 1 and ends at 0, and its area
over ``k / G`` (the trapezoid rule) is small when the ranking finds what moves the head first:
**an area below the random orderings' area is faithful**. Random orderings of the groups
(seeded) give the chance level, evaluated in the same forward as the measured ordering."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDictBase

from tdhook_rl.attributed import Attributed
from tdhook_rl.latent.probes import randomized_copy
from tdhook_rl.metrics._common import (
    Baseline,
    as_baseline,
    bind,
    check_chunk_size,
    generator,
    prepare,
    random_ranks,
    ranks,
)
from tdhook_rl.metrics.sanity import spearman

__all__ = ["GroupedCurves", "grouped_curves", "randomized_network_correlation", "square_groups"]


@dataclass
class GroupedCurves:
    """Normalized deletion (insertion) curves of every measured head over feature groups.

    Attributes:
        mode: ``"deletion"`` or ``"insertion"``.
        fractions: removed (restored) groups over all groups, ``(K,)``.
        curve: per head, ``mean d(k) / mean d(0)``, ``(K,)`` (NaN where ``d(0) = 0``).
        random: per head, the same for random group orderings (mean of ``n_random``).
        auc: per head, the area under ``curve`` (a 0-d tensor; small: faithful).
        random_auc: per head, the area under ``random``.
        scale: per head, ``mean d(0)``: how far the baseline moves the head at all.
        n_groups: ``G``.
        perturbation: the perturbation model, in words, with its seed.
    """

    mode: Literal["deletion", "insertion"]
    fractions: torch.Tensor
    curve: dict[str, torch.Tensor]
    random: dict[str, torch.Tensor]
    auc: dict[str, torch.Tensor]
    random_auc: dict[str, torch.Tensor]
    scale: dict[str, torch.Tensor]
    n_groups: int
    perturbation: str


def square_groups(planes: int, height: int, width: int) -> torch.Tensor:
    """Group labels for ``[planes, height, width]`` board planes, one group per square (all
    planes of a square together), flattened in the planes' own order: ``(planes * h * w,)``.

    Examples:
        >>> square_groups(2, 1, 3)
        tensor([0, 1, 2, 0, 1, 2])
    """
    squares = torch.arange(height * width).reshape(1, height, width)
    return squares.expand(planes, height, width).reshape(-1)


def grouped_curves(
    explained: Attributed,
    td: TensorDictBase,
    *,
    mode: Literal["deletion", "insertion"] = "deletion",
    groups: torch.Tensor | None = None,
    ks: Sequence[int] | None = None,
    heads: Sequence[str] | str | None = None,
    baseline: Baseline = 0.0,
    n_random: int = 8,
    seed: int = 0,
    chunk_size: int | None = None,
) -> GroupedCurves:
    """Normalized deletion or insertion curves of each head over feature groups, with random
    group orderings as chance; all orderings and all k in one stacked forward
    ``(H + n_random, K, *batch)`` (or ``chunk_size`` copies of the batch at a time).

    Args:
        explained: the :class:`~tdhook_rl.Attributed` wrapper that wrote the attributions.
        td: its output, with the inputs, attributions and the entries its targets read.
        mode: ``"deletion"`` or ``"insertion"``.
        groups: an integer label per flattened feature of the attributed inputs ``(F,)``
            (labels ``0..G-1``; :func:`square_groups` for board planes); default: each
            feature its own group.
        ks: the numbers of groups removed (restored), increasing from 0 to ``G`` (default
            every count ``0..G``); fewer points cost fewer forwards (the area is then the
            trapezoid over these points).
        heads: the target names to measure (default: all).
        baseline: what a removed feature becomes (as in
            :func:`~tdhook_rl.metrics.deletion_curve`).
        n_random: random group orderings averaged for the chance curve.
        seed: seeds the random orderings.
        chunk_size: at most this many perturbed copies of the batch per forward.

    Returns:
        A :class:`GroupedCurves`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> linear = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = linear.weight.copy_(torch.tensor([[4.0, 0.0, 0.0, 1.0]]))
        >>> net = TensorDictModule(linear, ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, "input_x_gradient", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.ones(8, 4), batch_size=[8]))
        >>> result = grouped_curves(explained, td)
        >>> result.curve["value"]
        tensor([1.0000, 0.2000, 0.0000, 0.0000, 0.0000])
        >>> bool(result.auc["value"] < result.random_auc["value"])
        True
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random must be an int >= 1, got {n_random!r}")
    check_chunk_size(chunk_size)
    setting = prepare(explained, td, heads)
    x, base = setting.x, as_baseline(baseline, setting)
    labels = _labels(groups, setting.n_features, x.device)
    n_groups = int(labels.max()) + 1
    batch, n_heads = setting.batch, len(setting.heads)
    attr = torch.stack([setting.attributions[h].abs() for h in setting.heads])  # (H, *b, F)
    scores = torch.zeros(*attr.shape[:-1], n_groups, dtype=attr.dtype, device=x.device)
    scores.index_add_(-1, labels, attr)  # (H, *batch, G): summed |attribution| per group
    order = torch.cat(  # (H + R, *batch, G): ranks of the groups
        [ranks(scores), random_ranks((n_random, *batch), n_groups, generator(seed), x.device)]
    )
    feature_rank = order[..., labels]  # (H + R, *batch, F): the rank of each feature's group
    counts = _ks(ks, n_groups, x.device)
    chosen = feature_rank[:, None] < counts.reshape(1, -1, *[1] * (len(batch) + 1))
    values = torch.where(chosen, base, x) if mode == "deletion" else torch.where(chosen, x, base)
    out = setting.evaluate(values, chunk_size)  # (n_targets, H + R, K, *batch)
    own = setting.head_rows(out[:, :n_heads])  # (H, K, *batch)
    chance = setting.head_values(out[:, n_heads:])  # (H, R, K, *batch)
    # the curves end at k = G: deletion at the baseline, insertion at x itself
    end_own, end_chance = own[:, -1:], chance[:, :, -1:]
    dims = tuple(range(2, own.ndim))
    d_own = (own - end_own).abs().mean(dims) if dims else (own - end_own).abs()  # (H, K)
    d_chance = (chance - end_chance).abs()
    d_chance = d_chance.mean(tuple(range(3, d_chance.ndim))) if len(batch) else d_chance
    d_chance = d_chance.mean(1)  # (H, K): over the random orderings
    scale = d_own[:, 0]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
    nan = torch.full_like(d_own, float("nan"))
    curve = torch.where(scale[:, None] > 0, d_own / safe, nan)
    random = torch.where(scale[:, None] > 0, d_chance / safe, nan)
    fractions = counts.to(x.dtype) / n_groups
    auc = torch.trapezoid(curve, x=fractions, dim=-1)
    random_auc = torch.trapezoid(random, x=fractions, dim=-1)
    grouping = "each feature alone" if groups is None else f"{n_groups} feature groups"
    return GroupedCurves(
        mode=mode,
        fractions=fractions,
        curve={h: curve[i] for i, h in enumerate(setting.heads)},
        random={h: random[i] for i, h in enumerate(setting.heads)},
        auc={h: auc[i] for i, h in enumerate(setting.heads)},
        random_auc={h: random_auc[i] for i, h in enumerate(setting.heads)},
        scale={h: scale[i] for i, h in enumerate(setting.heads)},
        n_groups=n_groups,
        perturbation=(
            f"{mode} of the top-k groups ({grouping}) by summed |attribution|, removed "
            f"features set to the baseline; curve: mean |f - f(end)| over samples, normalized "
            f"by its value at k=0; chance: {n_random} random group orderings, seed={seed}"
        ),
    )


def _labels(groups: torch.Tensor | None, n_features: int, device: torch.device) -> torch.Tensor:
    if groups is None:
        return torch.arange(n_features, device=device)
    if not isinstance(groups, torch.Tensor) or groups.dtype.is_floating_point:
        raise TypeError(f"groups must be an integer tensor of labels, got {groups!r}")
    labels = groups.reshape(-1).to(device=device, dtype=torch.long)
    if labels.numel() != n_features:
        raise ValueError(
            f"groups has {labels.numel()} labels but the attributed inputs have {n_features} "
            "features: give one label per flattened feature (square_groups for board planes)"
        )
    if int(labels.min()) < 0 or set(labels.unique().tolist()) != set(range(int(labels.max()) + 1)):
        raise ValueError("groups must use every label 0..G-1 (and no negative label)")
    return labels


def _ks(ks: Sequence[int] | None, n_groups: int, device: torch.device) -> torch.Tensor:
    if ks is None:
        return torch.arange(n_groups + 1, device=device)
    counts = [int(k) for k in ks]
    if len(counts) < 2 or counts[0] != 0 or counts[-1] != n_groups or counts != sorted(counts):
        raise ValueError(
            f"ks must increase from 0 to the number of groups ({n_groups}), got {list(ks)!r}"
        )
    return torch.tensor(counts, device=device)


def randomized_network_correlation(
    explained: Attributed,
    td: TensorDictBase,
    *,
    groups: torch.Tensor | None = None,
    heads: Sequence[str] | str | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Spearman's correlation, per sample, between each head's ``|attribution|`` and that of
    the same network with **every** layer re-initialized
    (:func:`~tdhook_rl.latent.probes.randomized_copy` with ``seed``; parameters of a module
    without ``reset_parameters`` keep their values): the last step of
    Adebayo et al.'s cascading randomization in one attribution pass instead of one per
    layer. The targets keep ``td``'s references (the taken action). With ``groups``, the
    summed ``|attribution|`` of each group is ranked (one number per board square).

    Near 0: the map depends on what was learned; near 1: the map would look the same for
    an untrained network (it shows the input or the architecture, not the weights).

    Returns:
        ``{head: (*batch)}`` correlations (NaN where a map is constant).

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> _ = torch.manual_seed(0)
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
        ...                           torch.nn.Linear(16, 1))
        >>> explained = thr.Attributed(TensorDictModule(mlp, ["observation"], ["state_value"]),
        ...                            "saliency", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(5, 6), batch_size=[5]))
        >>> randomized_network_correlation(explained, td)["value"].shape
        torch.Size([5])
    """
    setting = prepare(explained, td, heads)
    labels = None if groups is None else _labels(groups, setting.n_features, setting.x.device)
    private = copy.deepcopy(explained)  # its bound targets follow the copied module
    with warnings.catch_warnings():  # as randomization_check: such parameters stay as they are
        warnings.filterwarnings("ignore", "randomized_copy: no reset_parameters", UserWarning)
        drawn = randomized_copy(explained.wrapped, seed).state_dict()
    private.wrapped.load_state_dict(drawn)
    engine = bind(private, td, private.engine.targets)
    moved = setting.attribute(setting.x, engine)  # (H, *batch, F)
    original = torch.stack([setting.attributions[h] for h in setting.heads])
    a, b = original.abs(), moved.abs()
    if labels is not None:
        n_groups = int(labels.max()) + 1
        a = torch.zeros(*a.shape[:-1], n_groups, dtype=a.dtype).index_add_(-1, labels, a)
        b = torch.zeros(*b.shape[:-1], n_groups, dtype=b.dtype).index_add_(-1, labels, b)
    rho = spearman(a, b)
    return {h: rho[i] for i, h in enumerate(setting.heads)}
