"""SARFA (Puri et al., 2020, "Explain Your Move: Understanding Agent Actions Using Specific
and Relevant Feature Attribution"): saliency that is specific to one action and relevant to it."""

from __future__ import annotations

from typing import ClassVar

import torch

from tdhook_rl.attribution._perturb import describe
from tdhook_rl.attribution.feature_ablation import FeatureAblation


def sarfa_scores(values: torch.Tensor) -> torch.Tensor:
    """SARFA saliency of every action from action values at the input and when each group is
    perturbed.

    Args:
        values: ``(A, G + 1, *batch)`` action values (Q-values or logits): under each of the
            ``G`` perturbations, then (last) at the input.

    Returns:
        ``(A, *batch, G)``: for action ``a`` and group ``g``, ``2 K dp / (K + dp)`` with
        ``dp = p_a(s) - p_a(s')`` (softmax over the actions, clipped at 0: a perturbation
        that makes the action likelier is not salient for it) and ``K = 1 / (1 +
        KL(p_rem(s') || p_rem(s)))``, ``p_rem`` the softmax over the other actions (the
        paper's equation 2; the authors' published code takes the divergence the other way,
        ``KL(p_rem(s) || p_rem(s'))``).
    """
    n_actions = values.shape[0]
    logp = values.log_softmax(0)  # (A, G + 1, *batch)
    dp = (logp[:, -1:].exp() - logp[:, :-1].exp()).clamp_min(0)  # (A, G, *batch)
    # p_rem for every explained action a at once: a's own value set to -inf, (A_a, A, ...)
    eye = torch.eye(n_actions, dtype=torch.bool, device=values.device)
    eye = eye.reshape(n_actions, n_actions, *[1] * (values.ndim - 1))
    rem = values.unsqueeze(0).masked_fill(eye, float("-inf")).log_softmax(1)
    rem_x, rem_p = rem[:, :, -1:], rem[:, :, :-1]  # at the input, perturbed
    # KL(p_rem(s') || p_rem(s)), the explained action's own term (0 * -inf) left out
    terms = rem_p.exp() * (rem_p - rem_x)
    kl = terms.masked_fill(eye, 0.0).sum(1)  # (A, G, *batch)
    k = 1 / (1 + kl)
    score = torch.where(dp > 0, 2 * k * dp / (k + dp).clamp_min(1e-12), torch.zeros_like(dp))
    return score.movedim(1, -1)


class SARFA(FeatureAblation):  # its constructor and coalitions: each group removed alone
    """Specific and relevant feature attribution of discrete actions, by feature removal.

    The targets must be the action values of one head, one target per action (every logit
    or Q-value: ``{f"a{i}": ("logits", i) for i in range(n_actions)}``); target ``a``'s
    attribution is the saliency of action ``a``. Each feature group is replaced by its
    baseline in turn (as :class:`~tdhook_rl.attribution.FeatureAblation` does), and its
    saliency for action ``a`` is the harmonic mean of *specificity* (``dp``, how much the
    action's probability drops) and *relevance* (``K``, how little the distribution over the
    other actions changes); see :func:`sarfa_scores`. One forward for all groups, samples
    and actions. Scores lie in ``[0, 1]``. With several input keys, groups are removed one
    at a time across all keys.

    Args:
        feature_mask: as for :class:`~tdhook_rl.attribution.FeatureAblation`.
        baseline: as for :class:`~tdhook_rl.attribution.FeatureAblation`.
        chunk_size: at most this many perturbed inputs per forward.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(6, 3), ["observation"], ["logits"])
        >>> explained = thr.Attributed(net, SARFA(), inputs=["observation"],
        ...                            targets={f"a{i}": ("logits", i) for i in range(3)})
        >>> out = explained(TensorDict(observation=torch.randn(5, 6), batch_size=[5]))
        >>> out["attribution", "a0", "observation"].shape
        torch.Size([5, 6])
    """

    #: the scores are unsigned (:func:`tdhook_rl.attribution.noise.is_signed` reads it)
    abs: ClassVar[bool] = True

    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if values.shape[0] < 2:
            raise ValueError(
                "SARFA compares the actions of one head: give one target per action (e.g. "
                "{f'a{i}': ('logits', i) for i in range(n_actions)}), at least two; got "
                f"{values.shape[0]} target"
            )
        return sarfa_scores(values), None

    def __repr__(self) -> str:
        return (
            f"SARFA(feature_mask={describe(self.feature_mask)}, "
            f"baseline={describe(self.baseline)}, chunk_size={self.chunk_size})"
        )
