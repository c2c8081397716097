"""Prediction gaps on important and unimportant features (PGI / PGU, Agarwal et al. 2022,
OpenXAI): ``|f(x + noise on k features) - f(x)|``, averaged over seeded Gaussian noise, with
the noise on the top-k features by ``|attribution|`` (PGI: large is faithful), on the bottom-k
(PGU: small is faithful), and on k random features (the chance level)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase

from tdhook_rl.attributed import Attributed
from tdhook_rl.metrics._common import (
    check_chunk_size,
    check_k,
    generator,
    prepare,
    random_ranks,
    ranks,
)


@dataclass
class PredictionGapResult:
    """PGI and PGU of every measured head, one number per sample.

    Attributes:
        k: the number of perturbed features.
        pgi: per head, the mean ``|change of the target|`` with noise on its top-k features,
            ``(*batch)``.
        pgu: per head, the same with noise on its bottom-k features, ``(*batch)``.
        random: per head, the same with noise on k random features (a fresh random subset
            per noise draw), ``(*batch)``.
        perturbation: the perturbation model, in words, with its seed.
    """

    k: int
    pgi: dict[str, torch.Tensor]
    pgu: dict[str, torch.Tensor]
    random: dict[str, torch.Tensor]
    perturbation: str


def prediction_gap(
    explained: Attributed,
    td: TensorDictBase,
    k: int,
    *,
    heads: Sequence[str] | str | None = None,
    std: float = 0.1,
    n_samples: int = 10,
    seed: int = 0,
    chunk_size: int | None = None,
) -> PredictionGapResult:
    """PGI and PGU of each head: Gaussian noise ``N(0, std^2)`` added to the top-k (bottom-k,
    random k) features by ``|attribution|``; the mean absolute change of the head's target.

    The same noise draws serve the three feature choices; every head's top-k and bottom-k
    copies and the random copies go through the module as one stacked batch
    ``(2 H + 1, n_samples, *batch)``: one forward.

    Args:
        explained: the :class:`~tdhook_rl.Attributed` wrapper that wrote the attributions.
        td: its output, with the inputs, attributions and the entries the targets read.
        k: the number of features perturbed, ``1..F``.
        heads: the target names to measure (default: all).
        std: standard deviation of the noise.
        n_samples: noise draws per sample.
        seed: seeds the noise and the random feature subsets.
        chunk_size: at most this many perturbed copies of the batch per forward (default:
            all ``(2 H + 1) * (1 + n_samples)`` in one).

    Returns:
        A :class:`PredictionGapResult`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> lin = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[3.0, 0.0, 0.0, 1.0]]))
        >>> net = TensorDictModule(lin, ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, "saliency", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(8, 4), batch_size=[8]))
        >>> gap = prediction_gap(explained, td, k=2)
        >>> float(gap.pgu["value"].max()), bool((gap.pgi["value"] > 0).all())
        (0.0, True)
    """
    check_chunk_size(chunk_size)
    setting = prepare(explained, td, heads)
    n_features = setting.n_features
    check_k(k, n_features)
    if k == 0:
        raise ValueError("k=0 perturbs no feature: give 1 <= k <= the number of features")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    x, batch, n_heads = setting.x, setting.batch, len(setting.heads)
    gen = generator(seed)
    noise = (torch.randn((n_samples, *x.shape), generator=gen) * std).to(x.device)
    scores = torch.stack([setting.attributions[h].abs() for h in setting.heads])  # (H, *b, F)
    top = ranks(scores)[:, None] < k  # (H, 1, *batch, F)
    bottom = ranks(-scores)[:, None] < k  # ties: the earlier feature first
    chance = (random_ranks((n_samples, *batch), n_features, gen, x.device) < k)[None]
    full = (-1, n_samples, *x.shape)
    masks = torch.cat([top.expand(full), bottom.expand(full), chance])
    values = x + noise * masks  # (2H + 1, n, *batch, F)
    flat = torch.cat([x.expand(len(masks), 1, *x.shape), values], 1)  # the clean x first
    out = setting.evaluate(flat, chunk_size)  # (n_targets, 2H + 1, 1 + n, *batch): one forward
    gap = (out[:, :, 1:] - out[:, :, :1]).abs().mean(2)  # (n_targets, 2H + 1, *batch)
    pgi = setting.head_rows(gap[:, :n_heads])
    pgu = setting.head_rows(gap[:, n_heads : 2 * n_heads])
    rand = setting.head_values(gap[:, -1])
    return PredictionGapResult(
        k=k,
        pgi={h: pgi[i] for i, h in enumerate(setting.heads)},
        pgu={h: pgu[i] for i, h in enumerate(setting.heads)},
        random={h: rand[i] for i, h in enumerate(setting.heads)},
        perturbation=(
            f"x + N(0, {std}^2) on k={k} of {n_features} features (top-k, bottom-k by "
            f"|attribution|, or k uniformly random per draw), {n_samples} draws, seed={seed}"
        ),
    )
