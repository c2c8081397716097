"""The callback's faithfulness scalars (``AttributionSpec(..., faithfulness="deletion")``): per
head, the normalized deletion area of its attributions on a sample of the evaluation rollout
and the same for random feature orderings,

* ``faithfulness/<head>/deletion_auc``: the area under the head's distance to its
  all-removed value as the top-ranked features are set to 0, normalized to 1 before any
  removal (:func:`tdhook_rl.metrics.trust.grouped_curves`); below the random orderings'
  area: the ranking is faithful;
* ``faithfulness/<head>/deletion_auc_random``: the chance level (random orderings, seeded).

It costs forwards only (no attribution pass): the rollout already holds the attributions. A
head at the float-rounding level, or whose value does not move when every feature is
removed, is logged as NaN."""

from __future__ import annotations

import math
from collections.abc import Set

import torch
from tensordict import TensorDictBase

from tdhook_rl.attributed import Attributed
from tdhook_rl.callbacks.scalars import scalar_name
from tdhook_rl.metrics.trust import grouped_curves

__all__ = ["FAITHFULNESS", "check_faithfulness", "faithfulness_scalars"]

#: the faithfulness measures the callback can log
FAITHFULNESS = ("deletion",)
SAMPLES = 64  # rollout steps measured, evenly spaced
POINTS = 11  # at most this many deletion counts (0, ..., all features)


def check_faithfulness(value: str | None, explained: Attributed | None = None) -> None:
    """``AttributionSpec.faithfulness`` is ``None`` or one of :data:`FAITHFULNESS`, and the
    wrapper has an input entry to delete features of (not hidden sites only)."""
    if value is not None and value not in FAITHFULNESS:
        raise ValueError(
            f"AttributionSpec.faithfulness must be None or one of {list(FAITHFULNESS)}, "
            f"got {value!r}"
        )
    if value is not None and explained is not None and not explained.inputs:
        raise ValueError(
            "AttributionSpec(faithfulness='deletion') deletes features of the entries the "
            "module reads; the inputs name hidden sites only: add e.g. 'observation'"
        )


def faithfulness_scalars(
    explained: Attributed,
    rollout: TensorDictBase,
    skip: Set[str] = frozenset(),
    *,
    samples: int = SAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """The two deletion scalars of every head of ``explained`` on ``rollout`` (its output:
    the inputs, the attributions and the taken actions), ``skip``'s heads as NaN.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
        >>> explained = Attributed(net, "input_x_gradient", inputs=["observation"],
        ...                        targets={"value": "state_value"})
        >>> rollout = explained(TensorDict(observation=torch.randn(10, 8, 4), batch_size=[10, 8]))
        >>> sorted(faithfulness_scalars(explained, rollout))
        ['faithfulness/value/deletion_auc', 'faithfulness/value/deletion_auc_random']
    """
    nan = float("nan")
    heads = [h for h in explained.targets if h not in skip]
    out = {}
    for head in explained.targets:
        out[scalar_name("faithfulness", head, "deletion_auc")] = nan
        out[scalar_name("faithfulness", head, "deletion_auc_random")] = nan
    if not heads:
        return out
    flat = rollout.reshape(-1)
    count = min(samples, flat.shape[0])
    index = torch.linspace(0, flat.shape[0] - 1, count).round().long()
    batch = flat[index.to(flat.device)]
    n_features = sum(
        math.prod(batch.get(k).shape[1:]) for k in explained.inputs if k in batch.keys(True)
    )
    ks = sorted({round(i * n_features / (POINTS - 1)) for i in range(POINTS)})
    curves = grouped_curves(
        explained, batch, heads=heads, ks=ks, n_random=4, seed=seed, chunk_size=16
    )
    for head in heads:
        out[scalar_name("faithfulness", head, "deletion_auc")] = float(curves.auc[head])
        out[scalar_name("faithfulness", head, "deletion_auc_random")] = float(
            curves.random_auc[head]
        )
    return out
