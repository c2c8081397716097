"""Concept activation vectors and TCAV (Kim et al. 2018, "Interpretability beyond feature
attribution: quantitative testing with concept activation vectors").

* A **CAV** of a concept at a site is the unit normal of a linear classifier separating the
  site's activations on concept examples from those on random examples, pointing towards the
  concept (:func:`concept_activation_vector`, a :class:`~tdhook_rl.probes.LogisticProbe`).
* The **TCAV score** of a head along a CAV is the fraction of inputs whose directional
  derivative of the head along the CAV, ``grad_a head(x) . v``, is positive
  (:func:`tcav_scores`). The derivative is taken at the site by adding a zero leaf requiring
  grad to its activation (:class:`~tdhook_rl.core.intercept.Interception`), every head at
  once by one backward batched over one-hot cotangents (``is_grads_batched=True``).
* **Significance** (:func:`tcav`): CAVs of the concept against several random sets, and CAVs
  of one random set against the same random sets, give two samples of TCAV scores; a
  two-sided Student t-test (equal variances, as ``scipy.stats.ttest_ind`` by default) tells
  whether the concept's scores differ from those of random directions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from tdhook_rl.core.grad_mode import gradients_enabled
from tdhook_rl.core.intercept import Interception, intercepting
from tdhook_rl.core.sites import KeySite, ModuleSite, resolve_site
from tdhook_rl.latent.linear_probes import LogisticProbe
from tdhook_rl.targets import as_targets, per_sample

__all__ = [
    "CAV",
    "TCAVResult",
    "concept_activation_vector",
    "directional_derivatives",
    "t_test",
    "tcav",
    "tcav_scores",
]


@dataclass
class CAV:
    """A concept activation vector: ``vector [D]`` (unit norm, towards the concept, in the
    site's flattened units), the classifier's ``accuracy`` on held-out examples, and the
    fitted ``probe``."""

    vector: torch.Tensor
    accuracy: float
    probe: LogisticProbe


def concept_activation_vector(
    concept: torch.Tensor,
    negative: torch.Tensor,
    *,
    held_out: float = 0.3,
    seed: int = 0,
    l2: float = 1e-3,
) -> CAV:
    """Fits a CAV separating ``concept`` activations from ``negative`` (random) ones.

    The classifier is a :class:`~tdhook_rl.probes.LogisticProbe` on standardized features,
    fitted on a seeded ``1 - held_out`` part of each set (all of it when ``held_out=0``), its
    accuracy measured on the rest. Its decision function is linear in the raw activations; the
    CAV is that function's gradient ``(w_concept - w_random) / feature_scale``, normalized.

    Args:
        concept, negative: activations ``[n, *units]`` (flattened to ``[n, D]``), at least 2
            examples of each in the training part and, with ``held_out > 0``, 1 in the rest.
        held_out: the fraction of each set kept for the accuracy, in ``[0, 1)``.
        seed: seeds the split.
        l2: the classifier's penalty.

    Examples:
        >>> x = torch.randn(200, 3)
        >>> cav = concept_activation_vector(x[:100] + torch.tensor([2.0, 0, 0]), x[100:])
        >>> bool(cav.vector[0] > 0.9), cav.accuracy > 0.7
        (True, True)
    """
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out is a fraction in [0, 1), got {held_out!r}")
    sets = []
    for name, acts in (("concept", concept), ("negative", negative)):
        if not isinstance(acts, torch.Tensor) or acts.ndim < 2:
            raise ValueError(f"{name} activations must be [n, *units], got {_shape(acts)}")
        sets.append(acts.reshape(acts.shape[0], -1))
    if sets[0].shape[1] != sets[1].shape[1]:
        raise ValueError(
            f"concept and negative activations differ in width: {sets[0].shape[1]} vs "
            f"{sets[1].shape[1]}; record both at the same site"
        )
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for name, acts in zip(("concept", "negative"), sets, strict=True):
        n_test = math.ceil(held_out * acts.shape[0]) if held_out > 0 else 0
        if acts.shape[0] - n_test < 2 or (held_out > 0 and n_test < 1):
            raise ValueError(
                f"too few {name} examples: {acts.shape[0]}; a CAV needs at least 2 per set to "
                f"train{' and 1 held out' if held_out > 0 else ''} (held_out={held_out})"
            )
        order = torch.randperm(acts.shape[0], generator=g).to(acts.device)
        test.append(acts[order[:n_test]])
        train.append(acts[order[n_test:]])
    probe = LogisticProbe(n_classes=2, l2=l2).fit(*_labelled(train))
    w = probe.weight
    assert w is not None
    # dropped (near-constant) features have zero weight: their standardized value is zero
    direction = (w[:, 1] - w[:, 0]) / probe.feature_scale.to(w.dtype)
    norm = direction.norm()
    if not norm > 0:
        raise ValueError("the classifier found no direction: the activations do not vary")
    accuracy = float("nan")
    if held_out > 0:
        accuracy = float(probe.score(*_labelled(test))["accuracy"])
    return CAV(vector=(direction / norm).to(sets[0].dtype), accuracy=accuracy, probe=probe)


def _labelled(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat(parts)  # concept rows first, label 1; negative rows label 0
    y = torch.cat([torch.ones(len(parts[0])), torch.zeros(len(parts[1]))]).long()
    return x, y.to(x.device)


def directional_derivatives(
    module: TensorDictModuleBase,
    inputs: TensorDictBase,
    site: str | ModuleSite | KeySite,
    directions: torch.Tensor,
    heads: Mapping[str, Any],
) -> torch.Tensor:
    """``grad_a head . v`` for every head, input and direction: ``[n_heads, *batch, C]``.

    Args:
        module: the network (its forward reads ``inputs``).
        inputs: a TensorDict of inputs, batch ``()``, ``(B,)``, ``(T, B)``, ...
        site: a submodule path (output, or ``ModuleSite(path, io="input")``).
        directions: ``[C, D]`` (or ``[D]``), ``D`` the site's units per sample.
        heads: ``{name: target}`` as :func:`tdhook_rl.targets.as_targets` reads them
            (``"state_value"``, ``("logits", 3)``, ``ActionLogProb()``, a callable).
    """
    resolved = resolve_site(module, site)
    if not isinstance(resolved, ModuleSite):
        raise TypeError(f"TCAV needs a submodule's output or input as site, got {resolved!r}")
    directions = directions[None] if directions.ndim == 1 else directions
    targets = as_targets(heads, module, kind="head")
    leaf: list[torch.Tensor] = []

    def add_zero(value: torch.Tensor) -> torch.Tensor:
        if leaf:
            raise RuntimeError(f"site {resolved.path!r} ran more than once in one forward pass")
        leaf.append(torch.zeros_like(value, requires_grad=True))
        return value + leaf[0]

    submodule = module.get_submodule(resolved.path)
    tap = Interception(submodule, add_zero, io=resolved.io, element=resolved.element)
    with gradients_enabled(), intercepting([tap]):
        out = module(inputs.clone())
        if not leaf:
            raise RuntimeError(f"site {resolved.path!r} did not run in the forward pass")
        values = torch.stack([per_sample(t(out, out), out.batch_size, t) for t in targets.values()])
        n = values.shape[0]
        sums = values.reshape(n, -1).sum(1)  # (H,): samples are independent
        (grads,) = torch.autograd.grad(
            sums,
            leaf,
            grad_outputs=torch.eye(n, dtype=sums.dtype, device=sums.device),
            is_grads_batched=True,
            materialize_grads=True,
        )
    batch = out.batch_size
    grads = grads.expand(n, *leaf[0].shape).reshape(n, batch.numel(), -1)  # (H, N, D)
    if grads.shape[-1] != directions.shape[-1]:
        raise ValueError(
            f"site {resolved.path!r} has {grads.shape[-1]} units per sample but the directions "
            f"have {directions.shape[-1]}"
        )
    dd = grads @ directions.to(grads).T  # (H, N, D) @ (D, C) -> (H, N, C)
    return dd.reshape(n, *batch, directions.shape[0])


def tcav_scores(
    module: TensorDictModuleBase,
    inputs: TensorDictBase,
    site: str | ModuleSite | KeySite,
    directions: torch.Tensor,
    heads: Mapping[str, Any],
) -> torch.Tensor:
    """``[n_heads, C]``: the fraction of inputs with a positive directional derivative of
    each head along each direction (Kim et al.'s TCAV_Q; captum's ``sign_count``)."""
    dd = directional_derivatives(module, inputs, site, directions, heads)
    return (dd > 0).flatten(1, -2).double().mean(1)


@dataclass
class TCAVResult:
    """TCAV of one concept at one site (``R`` random sets, ``H`` heads).

    Attributes:
        heads: the heads' names.
        scores: ``[H, R]`` TCAV scores of the concept's CAVs (one per random set).
        random_scores: ``[H, R]`` scores of random CAVs (a random set against the others).
        p_values: ``[H]`` two-sided t-test of ``scores`` against ``random_scores``.
        accuracy: ``[R]`` held-out accuracies of the concept's CAVs.
    """

    heads: list[str]
    scores: torch.Tensor
    random_scores: torch.Tensor
    p_values: torch.Tensor
    accuracy: torch.Tensor

    def significant(self, alpha: float = 0.05) -> torch.Tensor:
        """``[H]`` bool: the concept's scores differ from random ones at level ``alpha``."""
        return self.p_values < alpha

    def __str__(self) -> str:
        lines = [f"TCAV over {self.scores.shape[1]} random sets (CAV accuracy "
                 f"{float(self.accuracy.mean()):.2f})"]  # fmt: skip
        for i, name in enumerate(self.heads):
            lines.append(
                f"{name:<12} score {float(self.scores[i].mean()):.3f}  random "
                f"{float(self.random_scores[i].mean()):.3f}  p = {float(self.p_values[i]):.3g}"
            )
        return "\n".join(lines)


def tcav(
    module: TensorDictModuleBase,
    inputs: TensorDictBase,
    site: str | ModuleSite | KeySite,
    concept: torch.Tensor,
    randoms: Sequence[torch.Tensor],
    heads: Mapping[str, Any],
    *,
    held_out: float = 0.3,
    seed: int = 0,
) -> TCAVResult:
    """TCAV scores of every head for one concept, with the test against random CAVs.

    With random sets ``R_0, ..., R_m``: the concept's CAVs are ``concept`` vs ``R_i`` and the
    random CAVs ``R_0`` vs ``R_i``, ``i = 1..m``; every TCAV score of both comes from one
    batched backward over ``inputs``.

    Args:
        module, inputs, site, heads: as :func:`directional_derivatives`.
        concept: the site's activations on concept examples ``[n, *units]``.
        randoms: ``m + 1 >= 3`` sets of activations on random examples.
        held_out, seed: see :func:`concept_activation_vector`.
    """
    if len(randoms) < 3:
        raise ValueError(
            f"tcav needs at least 3 random sets (one to make random CAVs, two or more to test "
            f"against), got {len(randoms)}"
        )
    concept_cavs = [
        concept_activation_vector(concept, r, held_out=held_out, seed=seed + i)
        for i, r in enumerate(randoms[1:])
    ]
    random_cavs = [
        concept_activation_vector(randoms[0], r, held_out=held_out, seed=seed + i)
        for i, r in enumerate(randoms[1:])
    ]
    directions = torch.stack([c.vector for c in concept_cavs + random_cavs])  # (2m, D)
    scores = tcav_scores(module, inputs, site, directions, heads)  # (H, 2m)
    m = len(concept_cavs)
    ours, theirs = scores[:, :m], scores[:, m:]
    p = torch.tensor([t_test(a, b) for a, b in zip(ours, theirs, strict=True)])
    return TCAVResult(
        heads=list(heads),
        scores=ours,
        random_scores=theirs,
        p_values=p,
        accuracy=torch.tensor([c.accuracy for c in concept_cavs]),
    )


def t_test(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sided p-value of Student's t-test for equal means (pooled variance).

    Examples:
        >>> round(t_test(torch.tensor([1.0, 2, 3]), torch.tensor([1.0, 2, 3])), 6)
        1.0
    """
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = a.numel(), b.numel()
    if na < 2 or nb < 2:
        raise ValueError(f"a t-test needs at least 2 values per group, got {na} and {nb}")
    df = na + nb - 2
    pooled = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df
    diff = float(a.mean() - b.mean())
    se = math.sqrt(float(pooled) * (1 / na + 1 / nb))
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    t = diff / se
    return _betainc(df / 2, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` (continued fraction, Lentz)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x)
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
