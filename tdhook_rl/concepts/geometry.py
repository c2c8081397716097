"""Representation geometry: intrinsic dimension (TwoNN) and linear CKA, batched in torch.

* :func:`twonn` — Facco, d'Errico, Rodriguez and Laio (2017), "Estimating the intrinsic
  dimension of datasets by a minimal neighborhood information". For each point, the ratio
  ``mu = r2 / r1`` of its second- to first-nearest-neighbour distance is Pareto distributed,
  ``P(mu > m) = m^-d``, on a ``d``-dimensional manifold of locally uniform density.
* :func:`linear_cka` / :func:`cka_matrix` — Kornblith, Norouzi, Lee and Hinton (2019),
  "Similarity of neural network representations revisited": linear CKA, and its debiased
  form built on the unbiased HSIC estimator of Song et al. (2012), used by Nguyen, Raghu and
  Kornblith (2021). Compares layers, agents or checkpoints on the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

__all__ = ["cka_matrix", "linear_cka", "twonn"]


def twonn(
    x: torch.Tensor,
    *,
    method: Literal["fit", "mle"] = "fit",
    discard: float = 0.1,
    duplicate_tol: float = 1e-5,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """The TwoNN intrinsic dimension of a point cloud (of several at once).

    Args:
        x: ``[*sets, N, D]`` points (``N >= 3`` per set); trailing unit dimensions of a conv
            map are the caller's to flatten.
        method: ``"fit"`` (the paper's estimator): the least-squares line through the origin
            of ``-log(1 - F(mu))`` against ``log(mu)`` with the empirical ``F(mu_(i)) = i / N``,
            after discarding the largest ``discard`` fraction of the ratios (the paper drops
            10%); ``"mle"``: the maximum-likelihood estimate of the Pareto exponent, made
            unbiased, ``(N - 1) / sum_i log(mu_i)``.
        discard: see ``"fit"``, in ``[0, 1)``.
        duplicate_tol: a point whose nearest neighbour is closer than this times the set's
            RMS distance to its mean counts as a duplicate (a network's float32 forward gives
            equal inputs activations that differ by rounding, ~1e-7 relative; their tiny
            ``r1`` would make ``mu`` huge). ``0`` drops exact duplicates only.
        chunk_size: query points per distance computation (``[*sets, chunk, N]`` floats).

    Points with a duplicate (``r1 = 0``, their ratio is undefined; see ``duplicate_tol``) are
    left out; distances are computed in float64. A point whose nearest neighbour has copies
    still sees ``r2 = r1`` (``mu = 1``): on data with many repeated points keep one copy of
    each first, as Facco et al. advise (``torch.unique(x, dim=0)``).

    Returns:
        ``[*sets]`` dimensions (a scalar tensor for one set).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> plane = torch.randn(2000, 2, generator=g) @ torch.randn(2, 10, generator=g)
        >>> round(float(twonn(plane)))
        2
    """
    if method not in ("fit", "mle"):
        raise ValueError(f"method must be 'fit' or 'mle', got {method!r}")
    if not isinstance(discard, int | float) or not 0 <= discard < 1:
        raise ValueError(f"discard is a fraction in [0, 1), got {discard!r}")
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"twonn needs points shaped [*sets, N, D], got {_shape(x)}")
    n = x.shape[-2]
    if n < 3:
        raise ValueError(
            f"TwoNN needs at least 3 samples per set (each needs two neighbours), got {n}; "
            "record more states"
        )
    x = x.double()
    if not isinstance(duplicate_tol, int | float) or not 0 <= duplicate_tol < 1:
        raise ValueError(f"duplicate_tol is a small fraction in [0, 1), got {duplicate_tol!r}")
    radius = (x - x.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()  # (*sets,)
    mu = _neighbour_ratios(x, chunk_size, duplicate_tol * radius)  # nan at duplicates
    valid = ~mu.isnan()
    n_valid = valid.sum(-1)
    if bool((n_valid < 3).any()):
        raise ValueError(
            f"TwoNN needs at least 3 distinct samples per set; a set has only "
            f"{int(n_valid.min())} points with a non-duplicate nearest neighbour"
        )
    log_mu = torch.where(valid, mu, 1.0).log()  # (*sets, N), 0 where left out
    if method == "mle":
        return (n_valid - 1).double() / log_mu.sum(-1)
    log_mu = torch.where(valid, log_mu, torch.inf).sort(-1).values  # invalid ones last
    rank = torch.arange(1, n + 1, device=x.device, dtype=torch.float64)  # i = 1..N
    total = n_valid[..., None].double()
    keep = rank <= torch.floor((1 - discard) * total)
    keep &= rank < total  # F = 1 at the last point: -log(0)
    y = -torch.log1p(-rank / total)  # -log(1 - F(mu_(i)))
    xs = torch.where(keep, log_mu, 0.0)
    return (xs * torch.where(keep, y, 0.0)).sum(-1) / xs.pow(2).sum(-1)


def _neighbour_ratios(x: torch.Tensor, chunk_size: int, tol: torch.Tensor) -> torch.Tensor:
    """``r2 / r1`` per point, ``[*sets, N]`` (nan where ``r1 <= tol``, ``tol`` per set), in
    chunks of queries."""
    n = x.shape[-2]
    out = []
    for i in range(0, n, chunk_size):
        d = torch.cdist(x[..., i : i + chunk_size, :], x)  # (*sets, c, N)
        rows = torch.arange(d.shape[-2], device=x.device)
        d[..., rows, rows + i] = torch.inf  # a point is not its own neighbour
        r = d.topk(2, dim=-1, largest=False).values  # (*sets, c, 2), ascending
        ratio = r[..., 1] / r[..., 0]
        out.append(torch.where(r[..., 0] > tol[..., None], ratio, torch.nan))
    return torch.cat(out, -1)


def linear_cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = False) -> torch.Tensor:
    """Linear CKA between two representations of the same samples.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = X X^T``,
    ``L = Y Y^T``. Computed in feature space (``O(N D)`` memory, never the ``N x N`` Gram) in
    float64: ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` for the biased
    estimator (``X_c`` centred); with ``debiased=True`` each HSIC is Song et al.'s unbiased
    estimator (needs ``N >= 4``)::

        HSIC_u(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))

    where ``K~`` is ``K`` with its diagonal set to zero.

    Args:
        x: ``[*sets, N, Dx]``; y: ``[*sets, N, Dy]`` (the same ``N`` samples, row for row).
        debiased: use the unbiased HSIC estimator.

    Returns:
        ``[*sets]`` similarities; 1 for representations equal up to an orthogonal transform
        and an isotropic scaling (the biased estimator is in ``[0, 1]``).

    Examples:
        >>> x = torch.randn(100, 5)
        >>> q, _ = torch.linalg.qr(torch.randn(5, 5))
        >>> round(float(linear_cka(x, 3 * x @ q)), 6)
        1.0
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.ndim < 2:
            raise ValueError(f"linear_cka needs {name} shaped [*sets, N, D], got {_shape(t)}")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(
            f"x and y must hold the same samples: shapes {tuple(x.shape)} and {tuple(y.shape)} "
            "differ before the feature dimension"
        )
    n = x.shape[-2]
    if n < (4 if debiased else 2):
        raise ValueError(f"CKA needs at least {4 if debiased else 2} samples, got {n}")
    x, y = x.double(), y.double()
    hsic = _hsic_u if debiased else _hsic
    xy, xx, yy = hsic(x, y), hsic(x, x), hsic(y, y)
    denominator = (xx * yy).sqrt()
    if bool((denominator <= 0).any()):
        raise ValueError("CKA is undefined for a constant representation (zero variance)")
    return xy / denominator


def _hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||Y_c^T X_c||_F^2`` (HSIC up to the factor ``1/(n-1)^2``, which cancels)."""
    x = x - x.mean(-2, keepdim=True)
    y = y - y.mean(-2, keepdim=True)
    return (y.transpose(-1, -2) @ x).pow(2).sum((-1, -2))  # (*sets, Dy, Dx) -> (*sets,)


def _hsic_u(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Song et al.'s unbiased HSIC of linear kernels, from features alone."""
    n = x.shape[-2]
    kd, ld = x.pow(2).sum(-1), y.pow(2).sum(-1)  # (*sets, N) Gram diagonals
    trace = (y.transpose(-1, -2) @ x).pow(2).sum((-1, -2)) - (kd * ld).sum(-1)  # tr(K~ L~)
    k1 = x @ x.sum(-2).unsqueeze(-1)  # (*sets, N, 1): K 1
    l1 = y @ y.sum(-2).unsqueeze(-1)
    k1 = k1.squeeze(-1) - kd  # K~ 1
    l1 = l1.squeeze(-1) - ld
    sum_k, sum_l = k1.sum(-1), l1.sum(-1)  # 1'K~1, 1'L~1
    cross = (k1 * l1).sum(-1)  # 1'K~L~1
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))


def cka_matrix(
    representations: Mapping[str, torch.Tensor], *, debiased: bool = False
) -> torch.Tensor:
    """Linear CKA between every pair of representations (layers, agents, checkpoints).

    Args:
        representations: ``{name: [N, *units]}`` on the same ``N`` inputs (e.g. the
            ``("activations", name)`` entries of one rollout, flattened over its batch);
            trailing unit dimensions are flattened.
        debiased: see :func:`linear_cka`.

    Returns:
        ``[L, L]`` in the mapping's order.

    Examples:
        >>> x = torch.randn(50, 4)
        >>> m = cka_matrix({"a": x, "b": -x, "c": torch.randn(50, 3)})
        >>> m.shape, round(float(m[0, 1]), 6)
        (torch.Size([3, 3]), 1.0)
    """
    if not isinstance(representations, Mapping) or not representations:
        raise TypeError("cka_matrix needs a non-empty mapping {name: [N, *units] tensor}")
    flat = {k: v.reshape(v.shape[0], -1) for k, v in representations.items()}
    sizes = {k: v.shape[0] for k, v in flat.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the representations must hold the same samples; sample counts: {sizes}")
    names = list(flat)
    out = torch.ones(len(names), len(names), dtype=torch.float64)
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            out[i, j] = out[j, i] = linear_cka(flat[a], flat[names[j]], debiased=debiased).cpu()
    return out


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
