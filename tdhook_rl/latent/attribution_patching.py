"""Attribution patching (AtP): the first-order estimate of activation patching, for every site,
unit and head at once.

:func:`~tdhook_rl.latent.patching.activation_patching` runs the corrupted input once per site
with that site's clean activation patched in. AtP (Nanda 2023; Kramar et al. 2024, "AtP*")
replaces each of those runs by the first term of its Taylor expansion around the corrupted
run: for a head ``f`` and a site with activations ``a_clean`` and ``a_corrupt``,

    ``f(corrupted, a := a_clean) - f(corrupted)  ~=  (a_clean - a_corrupt) . df/da |corrupted``

The gradient is the corrupted run's, the run that patching changes, so the estimate is exact
when ``f`` is linear in the site's activation and its error is second order in
``a_clean - a_corrupt``. ``df/da`` is the total derivative (through every later site), taken
by adding a zero leaf to each site's activation; all sites and heads come from one clean pass,
one corrupted pass and one batched backward over one-hot cotangents (samples are assumed
independent, as everywhere in tdhook_rl: the gradient of a head's batch sum is the per-sample
gradient). It fails where the head is far from linear between the two activations: a
saturated unit (tanh, sigmoid, a ReLU that switches) has a vanishing gradient at the corrupted
run even when patching it changes the head a lot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type

from tdhook_rl.core.grad_mode import gradients_enabled
from tdhook_rl.core.sites import SiteSpec, resolve_sites
from tdhook_rl.core.vmap import is_vmapped
from tdhook_rl.latent.intervened import Intervened
from tdhook_rl.latent.interventions import Intervention
from tdhook_rl.latent.patching import PatchingResult, default_sites
from tdhook_rl.targets import Target, as_targets, per_sample

__all__ = ["AtPResult", "Coefficients", "attribution_patching", "first_order_patching", "spearman"]


@dataclass
class AtPResult:
    """AtP's estimate of what each site's clean activation restores, per head.

    Attributes:
        sites: the sites, in order.
        heads: the head (target) names.
        estimate: ``[n_sites, n_heads]``: the estimate of
            :attr:`PatchingResult.restored <tdhook_rl.latent.patching.PatchingResult>`,
            ``mean(effects) / (mean clean - mean corrupted)``; NaN where the means agree.
        clean, corrupted: per-sample head values ``[n_heads, *batch]`` (exact).
        effects: ``[n_sites, n_heads, *batch]``: the first-order estimate of
            ``patched - corrupted`` per sample, ``(a_clean - a_corrupt) . df/da`` at the
            corrupted run.
        units: with ``per_unit=True``, ``{site: [n_heads, *batch, *unit_shape]}``: the same
            estimate for patching one unit of the site alone (summing over the units gives
            ``effects``); else ``None``.
        rows: ``{"site", "head", "estimate"}`` per site and head, for tables and logs.
    """

    sites: list[str]
    heads: list[str]
    estimate: torch.Tensor
    clean: torch.Tensor
    corrupted: torch.Tensor
    effects: torch.Tensor
    units: dict[str, torch.Tensor] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patched(self) -> torch.Tensor:
        """``[n_sites, n_heads, *batch]``: the estimate of ``PatchingResult.patched``."""
        return self.corrupted + self.effects

    def rank_correlation(self, exact: PatchingResult) -> dict[str, float]:
        """Spearman correlation, per head, between this estimate and ``exact.restored`` over
        the sites (sites where either is NaN are left out; NaN with fewer than 2 left).

        On a chain of layers every site on a head's path restores all of it (``restored`` 1)
        and every other site nothing (0): the exact side is then mostly ties, and
        :meth:`sample_correlation` or the per-unit effects tell more.

        Raises:
            ValueError: ``exact`` patched other sites or measured other heads.
        """
        self._check_same(exact)
        return {
            head: spearman(self.estimate[:, j], exact.restored[:, j])
            for j, head in enumerate(self.heads)
        }

    def sample_correlation(self, exact: PatchingResult) -> torch.Tensor:
        """``[n_sites, n_heads]``: Spearman correlation over the samples between
        :attr:`effects` and the exact ``exact.patched - exact.corrupted``, per site and head:
        low where the linear estimate fails (saturated units), NaN where either is constant.
        """
        self._check_same(exact)
        true = exact.patched - exact.corrupted
        return torch.tensor(
            [
                [spearman(self.effects[i, j], true[i, j]) for j in range(len(self.heads))]
                for i in range(len(self.sites))
            ]
        )

    def _check_same(self, exact: PatchingResult) -> None:
        if exact.sites != self.sites or exact.heads != self.heads:
            raise ValueError(
                f"the exact result has sites {exact.sites} and heads {exact.heads}, this one "
                f"{self.sites} and {self.heads}; run both with the same sites and heads"
            )

    def __str__(self) -> str:
        width = max(len(s) for s in self.sites)
        lines = [f"{'site':<{width}}  " + "  ".join(f"{h:>10}" for h in self.heads)]
        for i, site in enumerate(self.sites):
            cells = "  ".join(f"{float(v):>10.3f}" for v in self.estimate[i])
            lines.append(f"{site:<{width}}  {cells}")
        return "\n".join(lines)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors: Pearson's correlation of their ranks,
    tied values sharing their average rank; pairs with a NaN are left out.

    Examples:
        >>> spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 20.0, 20.0, 40.0]))
        0.9486...
    """
    x, y = x.detach().reshape(-1).double(), y.detach().reshape(-1).double()
    if x.shape != y.shape:
        raise ValueError(f"spearman needs two tensors of one size, got {x.numel()} and {y.numel()}")
    keep = ~(x.isnan() | y.isnan())
    x, y = x[keep], y[keep]
    if x.numel() < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``x``; a group of ties gets the mean of the ranks it spans."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1  # rank of each distinct value's first copy
    return (first + (counts - 1) / 2).to(x.dtype)[inverse]


class _Tap(Intervention):
    """Keeps the activation a site gives in one forward pass; with ``leaf=True`` it also adds
    a zero leaf requiring grad, so ``d head / d leaf`` is the total derivative at the site."""

    def __init__(self, label: str, leaf: bool) -> None:
        self.label, self.leaf = label, leaf
        self.value: torch.Tensor | None = None
        self.zero: torch.Tensor | None = None

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        if self.value is not None:
            raise RuntimeError(
                f"site {self.label!r} ran more than once in one forward pass (a submodule "
                "called several times); attribution patching needs one activation per site: "
                "choose a site that runs once"
            )
        if not isinstance(activation, torch.Tensor):
            raise TypeError(
                f"site {self.label!r} gives a {type(activation).__name__}, not a tensor; "
                "choose a submodule that outputs one tensor"
            )
        if is_vmapped(activation):
            raise ValueError(
                f"site {self.label!r} runs inside torch.vmap and cannot be attribution-patched; "
                "choose a site outside the vmap (or a key the module writes)"
            )
        if not activation.is_floating_point():
            raise TypeError(
                f"site {self.label!r} gives a {activation.dtype} tensor; attribution patching "
                "differentiates the heads by the site's activation, which must be floating "
                "point. Choose a site before the conversion."
            )
        self.value = activation.detach()
        if not self.leaf:
            return activation
        self.zero = torch.zeros_like(activation, requires_grad=True)
        return activation + self.zero


def _run(
    module: TensorDictModuleBase,
    td: TensorDictBase,
    sites: Mapping[str, Any],
    targets: Mapping[str, Target],
    reference: TensorDictBase | None,
    leaf: bool,
) -> tuple[TensorDictBase, torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    """One pass with a tap on every site: ``(output, heads [n_heads, *batch],
    {site: activation}, [zero leaf of each site])`` (no leaves unless ``leaf``)."""
    taps = {label: _Tap(label, leaf) for label in sites}
    out = Intervened(module, {site: taps[label] for label, site in sites.items()})(td)
    activations = {label: tap.value for label, tap in taps.items() if tap.value is not None}
    missed = [label for label in taps if label not in activations]
    if missed:
        raise RuntimeError(
            f"sites {missed} were not reached in the forward pass: the module did not run "
            "them (or dropped the key); choose sites on the path to the heads"
        )
    ref = out if reference is None else reference
    heads = torch.stack([per_sample(t(out, ref), out.batch_size, t) for t in targets.values()])
    leaves = [tap.zero for tap in taps.values() if tap.zero is not None]
    return out, heads, activations, leaves


def _head_gradients(heads: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[n_heads, *leaf_shape]`` per leaf: every head's gradient by one batched backward
    over one-hot cotangents (per sample: samples are independent, so a head's batch sum has
    the per-sample gradients)."""
    n = heads.shape[0]
    sums = heads.reshape(n, -1).sum(1)  # (n_heads,)
    if not sums.requires_grad:  # no head depends on any site
        return [leaf.new_zeros((n, *leaf.shape)) for leaf in leaves]
    grads = torch.autograd.grad(
        sums,
        leaves,
        grad_outputs=torch.eye(n, dtype=sums.dtype, device=sums.device),
        is_grads_batched=True,
        materialize_grads=True,
    )
    # a leaf no head depends on gets zeros without the head dimension (torch 2.13)
    return [g.expand(n, *leaf.shape) for g, leaf in zip(grads, leaves, strict=True)]


def _per_sample(label: str, value: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """``[n, *batch, *units]`` from ``[n, *site_shape]``: the site's leading dimensions are
    the batch, or the batch flattened into one (a conv that takes one batch dimension)."""
    shape = value.shape[1:]
    if shape[: len(batch)] == batch:
        return value
    if len(batch) > 1 and shape[:1] == (batch.numel(),):
        return value.reshape(value.shape[0], *batch, *shape[1:])
    raise ValueError(
        f"site {label!r} gives shape {tuple(shape)}, whose leading dimensions are not the "
        f"batch {tuple(batch)}; choose a site before the batch is reshaped"
    )


@torch.no_grad()
def attribution_patching(
    module: TensorDictModuleBase,
    clean: TensorDictBase,
    corrupted: TensorDictBase,
    heads: Mapping[str, Any],
    sites: Sequence[SiteSpec] | None = None,
    *,
    per_unit: bool = False,
) -> AtPResult:
    """Estimates :func:`~tdhook_rl.activation_patching` to first order, from one clean pass,
    one corrupted pass and one batched backward for all sites, units and heads.

    For each site, head and sample, ``effect = (a_clean - a_corrupt) . d head / d a``, the
    gradient taken at the corrupted run (the run that patching changes): the first-order
    estimate of ``patched - corrupted``, exact when the head is linear in the site's
    activation. ``estimate`` is the mean effect over the gap of the head means, the estimate of
    ``PatchingResult.restored``. The clean run's outputs serve as reference (the clean action
    of :class:`~tdhook_rl.targets.ActionLogProb`), runs are deterministic, and gradients are
    enabled locally (also under ``no_grad`` and ``inference_mode``). Nothing stays on the
    module and no parameter gradient is written.

    Args:
        module: the actor-critic (any TensorDict module).
        clean, corrupted: two TensorDicts with the same batch shape (``()``, ``(B,)``,
            ``(T, B)``, ...).
        heads: ``{name: target}`` as in :func:`~tdhook_rl.activation_patching`.
        sites: sites as in :func:`~tdhook_rl.activation_patching` (default: every leaf
            submodule); each must output one floating-point tensor whose leading dimensions
            are the batch (or the batch flattened), once per forward pass.
        per_unit: also return the estimate for each unit of each site (``AtPResult.units``).

    Returns:
        An :class:`AtPResult`; ``result.rank_correlation(activation_patching(...))`` compares it
        with the exact effects.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> clean = TensorDict(observation=torch.ones(8, 3), batch_size=[8])
        >>> result = attribution_patching(critic, clean, clean.apply(torch.neg),
        ...                               heads={"value": "state_value"}, per_unit=True)
        >>> torch.allclose(result.estimate, torch.ones(2, 1))   # linear: exactly patching's
        True
        >>> result.units["module.0"].shape   # [n_heads, *batch, units]
        torch.Size([1, 8, 4])
    """
    return first_order_patching(module, clean, corrupted, heads, sites, per_unit=per_unit)


class Coefficients(Protocol):
    """What replaces the gradient in :func:`first_order_patching` (RelP: LRP's propagation
    coefficients, :mod:`tdhook_rl.latent.relevance_patching`)."""

    def context(self, module: TensorDictModuleBase) -> AbstractContextManager[Any]:
        """Entered around the corrupted pass and its backward (outside the sites' taps)."""

    def __call__(
        self, label: str, grad: torch.Tensor, heads: torch.Tensor, activation: torch.Tensor
    ) -> torch.Tensor:
        """The coefficients ``[n_heads, *site_shape]`` of one site, from what the backward
        gave at its zero leaf (``grad``), the heads ``[n_heads, *batch]`` (with their graph)
        and the site's corrupted ``activation``."""


@torch.no_grad()
def first_order_patching(
    module: TensorDictModuleBase,
    clean: TensorDictBase,
    corrupted: TensorDictBase,
    heads: Mapping[str, Any],
    sites: Sequence[SiteSpec] | None = None,
    *,
    per_unit: bool = False,
    coefficients: Coefficients | None = None,
) -> AtPResult:
    """:func:`attribution_patching` with the gradient at the corrupted run replaced by
    ``coefficients`` (``None``: the gradient, AtP itself): ``effect = (a_clean - a_corrupt) .
    coefficients``, from one clean pass, one corrupted pass and one batched backward."""
    batch = clean.batch_size
    if batch != corrupted.batch_size:
        raise ValueError(
            f"clean and corrupted batches differ: {tuple(batch)} vs "
            f"{tuple(corrupted.batch_size)}; patching matches samples by batch index"
        )
    targets = as_targets(heads, module, kind="head")
    named = resolve_sites(
        module, list(sites) if sites is not None else default_sites(module, clean)
    )
    if len(set(named.values())) < len(named):
        raise ValueError(f"a site is given twice under two names: {named}")
    n = len(targets)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        reference, clean_heads, clean_acts, _ = _run(
            module, clean.copy(), named, targets, None, False
        )
        modified = (
            contextlib.nullcontext() if coefficients is None else coefficients.context(module)
        )
        with gradients_enabled(), modified:  # cloned inside: inference tensors cannot enter a graph
            _, values, corrupt_acts, leaves = _run(
                module, corrupted.clone(), named, targets, reference, True
            )
            grads = _head_gradients(values, leaves)  # (n_heads, *site_shape) per site
    if coefficients is not None:
        grads = [
            coefficients(label, grad, values, corrupt_acts[label])
            for label, grad in zip(named, grads, strict=True)
        ]
    effects, units = [], {}
    for label, grad in zip(named, grads, strict=True):
        a_clean, a_corrupt = clean_acts[label], corrupt_acts[label]
        if a_clean.shape != a_corrupt.shape:
            raise ValueError(
                f"site {label!r} gives shape {tuple(a_clean.shape)} on the clean input and "
                f"{tuple(a_corrupt.shape)} on the corrupted one; patching needs the same shape"
            )
        per_unit_effect = _per_sample(label, (a_clean - a_corrupt) * grad, batch)
        effects.append(per_unit_effect.reshape(n, *batch, -1).sum(-1))  # (n_heads, *batch)
        if per_unit:
            units[label] = per_unit_effect
    effects_t = torch.stack(effects)  # (n_sites, n_heads, *batch)
    values = values.detach()
    gap = clean_heads.reshape(n, -1).mean(1) - values.reshape(n, -1).mean(1)  # (n_heads,)
    mean_effect = effects_t.reshape(len(named), n, -1).mean(-1)  # (n_sites, n_heads)
    estimate = mean_effect / torch.where(gap == 0, torch.nan, gap)
    labels = list(named)
    rows = [
        {"site": label, "head": head, "estimate": float(estimate[i, j])}
        for i, label in enumerate(labels)
        for j, head in enumerate(targets)
    ]
    return AtPResult(
        labels,
        list(targets),
        estimate,
        clean_heads,
        values,
        effects_t,
        units if per_unit else None,
        rows,
    )
