"""Relevance patching (RelP, Jafari et al. 2025): attribution patching with LRP's propagation
coefficients in place of the gradient.

:func:`~tdhook_rl.attribution_patching` estimates what patching a site's clean activation
into the corrupted run changes as ``(a_clean - a_corrupt) . df/da``, the gradient taken at the
corrupted run. Below a saturated or switching unit that gradient is a poor local summary of
the head. RelP keeps the estimate and replaces ``df/da`` by LRP's *modified gradient*: the
relevance ``R_a`` that the LRP backward (under a :class:`~tdhook_rl.attribution.lrp.Composite`)
brings to the site for the head, divided by the activation it explains,

    ``effect  ~=  (a_clean - a_corrupt) . R_a / a_corrupt``   (``0`` where ``a_corrupt == 0``),

all at the corrupted run, the run that patching changes (AtP's convention here; the relevance
is zennit's, the top relevance the head's value). For a rule of the form
``R_in = x * c`` (epsilon, z+, gamma, alpha-beta at a layer's input, pass-through) the quotient
is exactly the coefficient ``c`` that LRP-as-modified-gradient propagates (LXT's formulation,
which RelP uses). Where the corrupted activation is exactly zero (a ReLU that is off) that
coefficient is not recoverable from the relevance and the unit's estimate is 0: a unit that
switches on in the clean run is missed, as AtP misses it where its gradient is 0. For a
bias-free linear network under the epsilon rule (``epsilon -> 0``) the coefficient *is* the
gradient: RelP, AtP and exact patching agree. Below a *saturated* tanh the opposite of AtP's
failure appears: pass-through gives the unit the coefficient ``tanh(z) / z`` of a linear map
where the gradient ``1 - tanh(z)^2`` is near zero, so RelP overstates what patching there
changes (``examples/relevance_patching.py`` measures both on the double-pendulum critic).

Everything else is :func:`~tdhook_rl.attribution_patching`'s (the same code,
:func:`~tdhook_rl.latent.attribution_patching.first_order_patching`): sites, heads, one clean
pass, one corrupted pass and one batched backward for every site, unit and head, the same
:class:`~tdhook_rl.latent.attribution_patching.AtPResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from tensordict.nn import TensorDictModuleBase

from tdhook_rl.attribution.lrp.composites import Composite, EpsilonPlus, applying
from tdhook_rl.attribution.lrp.method import check_no_custom_functions
from tdhook_rl.core.sites import SiteSpec
from tdhook_rl.latent.attribution_patching import AtPResult, first_order_patching

__all__ = ["LRPCoefficients", "relevance_patching"]


class LRPCoefficients:
    """LRP's propagation coefficients at each site: ``relevance / activation`` (see the
    module docstring), the :class:`~tdhook_rl.latent.attribution_patching.Coefficients` of
    RelP.

    Args:
        composite: the rules (default :class:`~tdhook_rl.attribution.lrp.EpsilonPlus`).
        check_graph: refuse a custom autograd function between the ruled layers (as
            :class:`~tdhook_rl.attribution.lrp.LRP` does).
    """

    def __init__(self, composite: Composite | None = None, check_graph: bool = True) -> None:
        if composite is not None and not isinstance(composite, Composite):
            raise TypeError(
                f"composite must be a Composite (e.g. EpsilonPlus()), got {composite!r}"
            )
        self.composite = composite if composite is not None else EpsilonPlus()
        self.check_graph = check_graph

    def context(self, module: TensorDictModuleBase) -> AbstractContextManager[Any]:
        return applying(module, self.composite)

    def __call__(
        self, label: str, grad: torch.Tensor, heads: torch.Tensor, activation: torch.Tensor
    ) -> torch.Tensor:
        # grad: (n_heads, *site_shape), the relevance per unit of top relevance; heads:
        # (n_heads, *batch). The site's leading dimensions are the batch, or it flattened.
        if self.check_graph and heads.grad_fn is not None:
            check_no_custom_functions(heads)
        n = heads.shape[0]
        lead = heads.ndim - 1
        if activation.shape[:lead] != heads.shape[1:]:
            lead = 1  # (N, *units): a batch flattened into one dimension
        values = heads.detach().reshape(n, *activation.shape[:lead])
        values = values.reshape(*values.shape, *[1] * (activation.ndim - lead))
        relevance = grad * values  # zennit's relevance: top relevance = the head's value
        safe = torch.where(activation == 0, torch.ones_like(activation), activation)
        return torch.where(activation == 0, torch.zeros_like(relevance), relevance / safe)

    def __repr__(self) -> str:
        return f"LRPCoefficients(composite={self.composite!r})"


def relevance_patching(
    module: TensorDictModuleBase,
    clean: Any,
    corrupted: Any,
    heads: Mapping[str, Any],
    sites: Sequence[SiteSpec] | None = None,
    *,
    composite: Composite | None = None,
    per_unit: bool = False,
) -> AtPResult:
    """RelP: :func:`~tdhook_rl.attribution_patching` with LRP's propagation coefficients
    (``relevance / activation`` at the corrupted run, under ``composite``) in place of the
    gradient; same arguments and result.

    Args:
        module, clean, corrupted, heads, sites, per_unit: as in
            :func:`~tdhook_rl.attribution_patching`.
        composite: the LRP rules (default :class:`~tdhook_rl.attribution.lrp.EpsilonPlus`);
            every module of ``module`` must get a rule (see
            :class:`~tdhook_rl.attribution.lrp.Composite`).

    Returns:
        An :class:`~tdhook_rl.latent.attribution_patching.AtPResult`;
        ``result.rank_correlation(activation_patching(...))`` compares it with exact patching.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from tdhook_rl.attribution.lrp import Composite, Epsilon
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False),
        ...                           torch.nn.Linear(4, 1, bias=False))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> clean = TensorDict(observation=torch.rand(8, 3) + 0.5, batch_size=[8])
        >>> result = relevance_patching(critic, clean, clean.apply(torch.neg),
        ...                             heads={"value": "state_value"},
        ...                             composite=Composite({torch.nn.Linear: Epsilon(0.0)}))
        >>> torch.allclose(result.estimate, torch.ones(2, 1))  # linear, no bias: exact
        True
    """
    coefficients = LRPCoefficients(composite)
    coefficients.composite.plan(module)  # a module without a rule: refused before any pass
    return first_order_patching(
        module, clean, corrupted, heads, sites, per_unit=per_unit, coefficients=coefficients
    )
