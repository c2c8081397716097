"""Infidelity and max-sensitivity (Yeh et al. 2019), with captum 0.9's definitions
(``captum.metrics.infidelity``, ``captum.metrics.sensitivity_max``), batched over samples,
perturbation draws and targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase

from tdhook_rl.attributed import Attributed
from tdhook_rl.metrics._common import check_chunk_size, generator, prepare, random_ranks


@dataclass
class InfidelityResult:
    """Infidelity of every measured head, one number per sample.

    Attributes:
        infidelity: per head ``E_I[(I . attribution - (f(x) - f(x - I)))^2]``, ``(*batch)``.
        random: per head, the same for a random attribution: the head's attribution values
            permuted over the features at random (one seeded permutation per sample).
        perturbation: the perturbation model, in words, with its seed.
    """

    infidelity: dict[str, torch.Tensor]
    random: dict[str, torch.Tensor]
    perturbation: str


@dataclass
class SensitivityResult:
    """Max-sensitivity of every measured head, one number per sample.

    Attributes:
        sensitivity: per head ``max_j ||a(x + d_j) - a(x)|| / ||a(x)||``, ``(*batch)``
            (``||a(x)|| = 0`` counts as 1, as in captum).
        perturbation: the perturbation model, in words, with its seed.
    """

    sensitivity: dict[str, torch.Tensor]
    perturbation: str


def gaussian_perturbations(
    shape: tuple[int, ...], std: float, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The perturbations ``I`` of :func:`infidelity`: ``N(0, std^2)`` draws, shape
    ``(n_perturb_samples, *batch, F)``, from a generator seeded with ``seed``.

    Examples:
        >>> gaussian_perturbations((2, 3, 4), 0.1, seed=0).shape
        torch.Size([2, 3, 4])
    """
    return (torch.randn(shape, generator=generator(seed)) * std).to(device)


def uniform_perturbations(
    shape: tuple[int, ...], radius: float, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The perturbations of :func:`sensitivity_max`: uniform in the L-infinity ball of
    ``radius`` (captum's ``default_perturb_func``), shape ``(n, *batch, F)``, seeded.

    Examples:
        >>> bool(uniform_perturbations((5, 3), 0.02, seed=0).abs().max() <= 0.02)
        True
    """
    draw = torch.rand(shape, generator=generator(seed)) * (2 * radius) - radius
    return draw.to(device)


def infidelity(
    explained: Attributed,
    td: TensorDictBase,
    *,
    heads: Sequence[str] | str | None = None,
    n_perturb_samples: int = 10,
    std: float = 0.1,
    seed: int = 0,
    normalize: bool = False,
    chunk_size: int | None = None,
) -> InfidelityResult:
    """Infidelity: how badly ``attribution . I`` predicts the target's drop
    ``f(x) - f(x - I)`` under random perturbations ``I`` (captum's definition, with its
    ``normalize`` option: the attributions rescaled by the best factor beta first).

    ``I`` are Gaussian draws (:func:`gaussian_perturbations`); all draws of all samples go
    through the module as one stacked batch ``(n_perturb_samples, *batch)``, and every
    target is read from that one forward.

    Args:
        explained: the :class:`~tdhook_rl.Attributed` wrapper that wrote the attributions.
        td: its output, with the inputs, attributions and the entries the targets read.
        heads: the target names to measure (default: all).
        n_perturb_samples: perturbation draws per sample.
        std: standard deviation of each feature's perturbation.
        seed: seeds the perturbations and the random-attribution permutations.
        normalize: captum's ``normalize``.
        chunk_size: at most this many perturbed copies of the batch per forward (default:
            all ``1 + n_perturb_samples`` in one).

    Returns:
        An :class:`InfidelityResult`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, thr.attribution.Saliency(abs=False),
        ...                            inputs=["observation"], targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(8, 4), batch_size=[8]))
        >>> result = infidelity(explained, td)   # a linear model's gradient is exact
        >>> bool(result.infidelity["value"].abs().max() < 1e-10)
        True
    """
    _check_n(n_perturb_samples)
    check_chunk_size(chunk_size)
    setting = prepare(explained, td, heads)
    x = setting.x
    perturb = gaussian_perturbations((n_perturb_samples, *x.shape), std, seed, x.device)
    with torch.no_grad():
        both = torch.cat([x[None], x[None] - perturb])  # (1 + n, *batch, F): one forward
        out = setting.head_values(setting.evaluate(both, chunk_size))  # (H, 1 + n, *batch)
        drop = out[:, :1] - out[:, 1:]  # (H, n, *batch): f(x) - f(x - I)
        attr = torch.stack([setting.attributions[h] for h in setting.heads])  # (H, *batch, F)
        shuffle = random_ranks(tuple(x.shape[:-1]), x.shape[-1], generator(seed + 1), x.device)
        shuffled = attr.gather(-1, shuffle.expand_as(attr))
        scores = {}
        for name, a in (("attributions", attr), ("random", shuffled)):
            dot = (a[:, None] * perturb[None]).sum(-1)  # (H, n, *batch): I . attribution
            scores[name] = _infidelity(dot, drop, normalize, n_perturb_samples)
    return InfidelityResult(
        infidelity={h: scores["attributions"][i] for i, h in enumerate(setting.heads)},
        random={h: scores["random"][i] for i, h in enumerate(setting.heads)},
        perturbation=(
            f"I ~ N(0, {std}^2) per feature, {n_perturb_samples} draws per sample, "
            f"x - I evaluated, seed={seed}; random attribution: the attribution permuted "
            f"over features, seed={seed + 1}; normalize={normalize}"
        ),
    )


def _infidelity(dot, drop, normalize: bool, n: int) -> torch.Tensor:
    if not normalize:
        return (dot - drop).square().sum(1) / n
    a2, ab, b2 = dot.square().sum(1), (dot * drop).sum(1), drop.square().sum(1)
    beta = ab / torch.where(a2 == 0, torch.ones_like(a2), a2)  # captum's safe_div
    return (beta * beta * a2 - 2 * beta * ab + b2) / n


def sensitivity_max(
    explained: Attributed,
    td: TensorDictBase,
    *,
    heads: Sequence[str] | str | None = None,
    n_perturb_samples: int = 10,
    perturb_radius: float = 0.02,
    norm_ord: str | float = "fro",
    seed: int = 0,
) -> SensitivityResult:
    """Max-sensitivity: the largest relative change of the attribution map when the inputs
    move inside an L-infinity ball of ``perturb_radius`` (captum's definition).

    The explained method runs again on all perturbed copies at once, ``(n, *batch)`` as one
    batch, for all targets in one pass; the targets keep the original forward's references
    (the taken action), so a stochastic policy's perturbed copies explain the same action.

    Args:
        explained: the :class:`~tdhook_rl.Attributed` wrapper that wrote the attributions.
        td: its output, with the inputs, attributions and the entries the targets read.
        heads: the target names to measure (default: all).
        n_perturb_samples: perturbed copies per sample.
        perturb_radius: the radius of the uniform L-infinity ball.
        norm_ord: the norm (``torch.linalg.norm``'s ``ord`` on the flat map; ``"fro"``: L2).
        seed: seeds the perturbations.

    Returns:
        A :class:`SensitivityResult`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, "saliency", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(8, 4), batch_size=[8]))
        >>> float(sensitivity_max(explained, td).sensitivity["value"].max())  # constant map
        0.0
    """
    _check_n(n_perturb_samples)
    setting = prepare(explained, td, heads)
    x = setting.x
    delta = uniform_perturbations((n_perturb_samples, *x.shape), perturb_radius, seed, x.device)
    moved = setting.attribute(x[None] + delta)  # (H, n, *batch, F): one pass
    attr = torch.stack([setting.attributions[h] for h in setting.heads])[:, None]
    norm = _norm(attr, norm_ord)
    norm = torch.where(norm == 0, torch.ones_like(norm), norm)
    change = (_norm(moved - attr, norm_ord) / norm).amax(1)  # (H, *batch)
    return SensitivityResult(
        sensitivity={h: change[i] for i, h in enumerate(setting.heads)},
        perturbation=(
            f"x + d, d ~ U(-{perturb_radius}, {perturb_radius}) per feature, "
            f"{n_perturb_samples} draws per sample, seed={seed}; norm {norm_ord!r}"
        ),
    )


def _norm(x: torch.Tensor, ord: str | float) -> torch.Tensor:
    if ord == "fro":
        return torch.linalg.vector_norm(x, 2, dim=-1)
    return torch.linalg.vector_norm(x, float(ord), dim=-1)


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_perturb_samples must be an int >= 1, got {n!r}")
