"""Feature ablation: the change of every target when one feature group takes its baseline."""

from __future__ import annotations

import torch

from tdhook_rl.attribution._perturb import CoalitionMethod, FeatureMask, describe
from tdhook_rl.attribution.baselines import Baselines


class FeatureAblation(CoalitionMethod):
    """``f(x) - f(x with group g set to the baseline)``, per target and group.

    Each feature (or group of features given by ``feature_mask``) is replaced by its
    baseline in turn, the others keeping their values; every feature of a group carries the
    group's value (captum's ``FeatureAblation``). The ``G`` ablated inputs and the input
    itself go through one forward (one per ``chunk_size`` of them) for all samples and all
    targets. With several input keys, groups are ablated one at a time across all keys: the
    other keys keep their values.

    Args:
        feature_mask: ``None`` (one group per feature), an integer tensor of group labels
            broadcastable to each input's feature shape (``(C, 1, 1)`` for the channels of an
            image), or a mapping ``input key -> labels``.
        baseline: a number, a tensor, a key of the input TensorDict, or a mapping ``input key
            -> one of these`` (as for integrated gradients).
        chunk_size: at most this many ablated inputs per forward; ``None`` for all at once.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, FeatureAblation(), inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> out["attribution", "value", "observation"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        feature_mask: FeatureMask = None,
        baseline: Baselines = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(feature_mask, baseline, None, chunk_size)

    def coalitions(self, n_groups: int, device: torch.device) -> torch.Tensor:
        # row g: every group but g present; the last row: the input itself
        eye = torch.eye(n_groups, dtype=torch.bool, device=device)
        return torch.cat([~eye, torch.ones(1, n_groups, dtype=torch.bool, device=device)])

    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # (n_t, G + 1, *batch) -> (n_t, *batch, G): f(x) - f(x without g)
        return (values[:, -1:] - values[:, :-1]).movedim(1, -1), None

    def __repr__(self) -> str:
        return (
            f"FeatureAblation(feature_mask={describe(self.feature_mask)}, "
            f"baseline={describe(self.baseline)}, chunk_size={self.chunk_size})"
        )
