"""Shapley values of feature groups: exact (all coalitions) and by permutation sampling."""

from __future__ import annotations

import math
from typing import Any

import torch

from tdhook_rl.attribution._perturb import (
    Background,
    CoalitionMethod,
    FeatureMask,
    Players,
    check_n_samples,
    describe,
    random_permutations,
)
from tdhook_rl.attribution._seeded import Seeded
from tdhook_rl.attribution.baselines import Baselines

#: ExactShapley enumerates 2^G coalitions; beyond this many groups, sample instead
MAX_EXACT_GROUPS = 16


def _groups_last(values: torch.Tensor) -> torch.Tensor:
    """``(n_t, G, *batch)`` -> ``(n_t, *batch, G)``."""
    return values.movedim(1, -1)


class ExactShapley(CoalitionMethod):
    """Exact Shapley values of ``G`` feature groups, from all ``2^G`` coalitions.

    ``phi_i = sum_{S not containing i} |S|! (G - |S| - 1)! / G! (f(S + i) - f(S))``, where a
    coalition ``S`` keeps its groups' features and the others take the baseline (or, with
    ``background``, the average of ``f`` over background samples filling them: the
    marginal expectation). All coalitions of all samples and all targets go through one
    forward (one per ``chunk_size`` coalitions), then one matrix product with the Shapley
    weights. Every feature of a group carries its group's value (as captum does).

    The completeness delta ``sum_i phi_i - (f(x) - f(baseline))`` (efficiency; summed over
    groups, each once) is written beside the attributions: zero up to rounding.

    Several input keys are players together: the groups of the first key, then those of the
    next (see :mod:`tdhook_rl.attribution._perturb`).

    Args:
        feature_mask: ``None`` (one group per feature), an integer tensor of group labels
            broadcastable to each input's feature shape, or a mapping ``input key -> labels``.
        baseline: what absent features take: a number, a tensor, a key of the input
            TensorDict, or a mapping ``input key -> one of these`` (as for integrated
            gradients).
        background: instead of ``baseline``, background samples ``[S, *feature]`` (e.g.
            observations from a replay buffer), or a mapping ``input key -> samples``:
            ``f(S)`` is averaged over them. Costs ``S`` times more evaluations.
        chunk_size: at most this many coalitions per forward (each with its ``S``
            background samples); ``None`` for all at once.

    Raises:
        ValueError: more than 16 groups (65,536 coalitions): use
            :class:`ShapleyValueSampling` or :class:`~tdhook_rl.attribution.KernelShap`,
            or group features with ``feature_mask``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
        ...                        torch.nn.Linear(8, 1)), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, ExactShapley(), inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.randn(5, 4), batch_size=[5]))
        >>> out["attribution", "value", "observation"].shape
        torch.Size([5, 4])
        >>> bool(out["attribution", "value", "completeness_delta"].abs().max() < 1e-5)
        True
    """

    has_convergence_delta = True

    def __init__(
        self,
        feature_mask: FeatureMask = None,
        baseline: Baselines = 0.0,
        background: Background = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(feature_mask, baseline, background, chunk_size)
        self._tables: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_tables": {}}

    def check_players(self, players: Players) -> None:
        if players.n > MAX_EXACT_GROUPS:
            raise ValueError(
                f"ExactShapley enumerates 2^G coalitions and the inputs have G={players.n} "
                f"feature groups (at most {MAX_EXACT_GROUPS}); use ShapleyValueSampling or "
                "KernelShap, or group features with feature_mask."
            )

    def _table(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """All coalitions ``(2^n, n)`` and the Shapley weights ``(n, 2^n)``, on ``device``
        once (no per-call host-to-device copy)."""
        slot = (n, device)
        if slot not in self._tables:
            codes = torch.arange(2**n)
            present = (codes[:, None] >> torch.arange(n)) & 1 == 1  # (2^n, n)
            size = present.sum(1)  # |S|
            weight = [
                math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)
            ]
            w = torch.tensor([*weight, 0.0], dtype=torch.float64)
            # coalition S enters phi_i with +w(|S|-1) if i in S (as S' + i), -w(|S|) if not
            coef = torch.where(present.T, w[(size - 1).clamp_min(0)], -w[size])  # (n, 2^n)
            self._tables[slot] = (present.to(device), coef.to(device))
        return self._tables[slot]

    def coalitions(self, n_groups: int, device: torch.device) -> torch.Tensor:
        return self._table(n_groups, device)[0]

    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = present.shape[1]
        coef = self._table(n, values.device)[1].to(values.dtype)
        # (n, 2^n) . (n_t, 2^n, *batch) -> (n, n_t, *batch) -> (n_t, *batch, n)
        phi = torch.tensordot(coef, values, dims=([1], [1])).movedim(0, -1)
        # code 0 is the empty coalition, code 2^n - 1 the full one
        delta = phi.sum(-1) - (values[:, -1] - values[:, 0])
        return phi, delta

    def __repr__(self) -> str:
        return (
            f"ExactShapley(feature_mask={describe(self.feature_mask)}, "
            f"baseline={describe(self.baseline)}, background={describe(self.background)}, "
            f"chunk_size={self.chunk_size})"
        )


class ShapleyValueSampling(Seeded, CoalitionMethod):
    """Shapley values estimated from ``n_samples`` random orderings of the groups.

    For each ordering, groups are added one by one to the baseline, and each group is
    credited with the change of the target when it enters (Castro et al., 2009; captum's
    ``ShapleyValueSampling``); the estimate is the mean over orderings. All
    ``n_samples * (G + 1)`` coalitions of all samples and targets go through one forward
    (one per ``chunk_size`` coalitions). Orderings are shared by the samples of a batch and
    drawn from the method's own seeded generator (a fresh stream per call), so wrapping a
    policy never changes the actions it samples.

    Every ordering's credits sum to ``f(x) - f(baseline)``, so the completeness delta written
    beside the attributions is zero up to rounding, whatever ``n_samples``.

    Args:
        n_samples: the number of orderings.
        feature_mask: as for :class:`ExactShapley`.
        baseline: as for :class:`ExactShapley`.
        background: as for :class:`ExactShapley`.
        seed: seed of the method's generator.
        chunk_size: at most this many coalitions per forward.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(12, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, ShapleyValueSampling(n_samples=8),
        ...                            inputs=["observation"], targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.randn(3, 12), batch_size=[3]))
        >>> out["attribution", "value", "observation"].shape
        torch.Size([3, 12])
    """

    has_convergence_delta = True

    def __init__(
        self,
        n_samples: int = 25,
        feature_mask: FeatureMask = None,
        baseline: Baselines = 0.0,
        background: Background = None,
        seed: int = 0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(feature_mask, baseline, background, chunk_size)
        self.n_samples = check_n_samples(n_samples)
        self._seeded(seed)

    def coalitions(self, n_groups: int, device: torch.device) -> torch.Tensor:
        order = random_permutations(self.n_samples, n_groups, self.generator(device), device)
        rank = order.argsort(-1)  # (n, G): the position of each group in its ordering
        steps = torch.arange(n_groups + 1, device=device)
        # (n, G + 1, G): after step j the groups ranked before j are present
        present = rank[:, None, :] < steps[None, :, None]
        return present.reshape(-1, n_groups)

    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = present.shape[1]
        n = present.shape[0] // (g + 1)
        # a group is absent for the steps up to its rank: (n, G + 1, G) -> (n, G)
        rank = (~present.reshape(n, g + 1, g)).sum(1) - 1
        y = values.unflatten(1, (n, g + 1))  # (n_t, n, G + 1, *batch)
        gains = y[:, :, 1:] - y[:, :, :-1]  # (n_t, n, G, *batch): the gain at each step
        batch = values.shape[2:]
        index = rank.reshape(1, n, g, *[1] * len(batch)).expand(values.shape[0], n, g, *batch)
        phi = gains.gather(2, index).mean(1)  # (n_t, G, *batch): each group's gain
        delta = phi.sum(1) - (y[:, :, -1] - y[:, :, 0]).mean(1)
        return _groups_last(phi), delta

    def __repr__(self) -> str:
        return (
            f"ShapleyValueSampling(n_samples={self.n_samples}, feature_mask="
            f"{describe(self.feature_mask)}, baseline={describe(self.baseline)}, seed={self.seed}, "
            f"chunk_size={self.chunk_size})"
        )
