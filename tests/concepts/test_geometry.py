"""TwoNN and CKA against known cases and slow from-the-paper implementations."""

from __future__ import annotations

import math

import pytest
import torch

from tdhook_rl.concepts import cka_matrix, linear_cka, twonn


def subspace(d: int, n: int = 2000, ambient: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(ambient, d, generator=g))
    return torch.randn(n, d, generator=g) @ basis.T + 3.0  # (n, ambient), offset


def twonn_slow(x: torch.Tensor, method: str, discard: float = 0.1) -> float:
    """Facco et al. 2017, point by point: mu_i = r2 / r1, then the fit or the MLE."""
    x = x.double()
    mus = []
    for i in range(x.shape[0]):
        d = ((x - x[i]) ** 2).sum(1).sqrt().tolist()
        d = sorted(v for j, v in enumerate(d) if j != i)
        if d[0] > 0:
            mus.append(d[1] / d[0])
    n = len(mus)
    if method == "mle":
        return (n - 1) / sum(math.log(m) for m in mus)
    mus.sort()
    kept = mus[: min(int((1 - discard) * n), n - 1)]  # the largest ratios are discarded
    pts = [(math.log(m), -math.log(1 - (i + 1) / n)) for i, m in enumerate(kept)]
    return sum(a * b for a, b in pts) / sum(a * a for a, _ in pts)


@pytest.mark.parametrize("method", ["fit", "mle"])
@pytest.mark.parametrize("d", [2, 5])
def test_twonn_finds_the_dimension_of_a_linear_subspace(d, method):
    estimate = float(twonn(subspace(d), method=method))
    assert abs(estimate - d) <= 0.15 * d, estimate


@pytest.mark.parametrize("method", ["fit", "mle"])
def test_twonn_matches_a_slow_implementation(method):
    x = subspace(3, n=300)
    x[5] = x[6]  # a duplicate: both points are left out
    got = float(twonn(x, method=method, chunk_size=64))
    assert got == pytest.approx(twonn_slow(x, method), rel=1e-9)


def test_twonn_is_batched_over_sets():
    sets = torch.stack([subspace(2, n=500, seed=1), subspace(4, n=500, seed=2)])
    batched = twonn(sets)
    assert batched.shape == (2,)
    torch.testing.assert_close(batched[0], twonn(sets[0]))
    torch.testing.assert_close(batched[1], twonn(sets[1]))


def test_near_duplicates_are_left_out_like_exact_ones():
    x = subspace(3, n=400)
    exact = torch.cat([x, x[:100]])  # 100 points twice: all 200 copies are left out
    wiggle = 1e-6 * torch.randn(100, 20, generator=torch.Generator().manual_seed(1))
    noisy = torch.cat([x, x[:100] + wiggle])  # float-rounding copies (seeded)
    torch.testing.assert_close(twonn(noisy), twonn(exact), rtol=1e-4, atol=0)
    assert float(twonn(noisy, duplicate_tol=0)) < 0.5 * float(twonn(exact))  # mu ~ 1e6
    # their neighbours see r2 = r1 (the documented bias): keeping one copy of each undoes it
    torch.testing.assert_close(twonn(torch.unique(exact, dim=0)), twonn(x))


def test_twonn_errors():
    with pytest.raises(ValueError, match="TwoNN needs at least 3 samples per set"):
        twonn(torch.randn(2, 5))
    with pytest.raises(ValueError, match="at least 3 distinct samples"):
        twonn(torch.ones(10, 3))
    with pytest.raises(ValueError, match=r"duplicate_tol is a small fraction in \[0, 1\)"):
        twonn(torch.randn(10, 3), duplicate_tol=-1)
    with pytest.raises(ValueError, match="method must be 'fit' or 'mle'"):
        twonn(torch.randn(10, 3), method="pca")
    with pytest.raises(ValueError, match=r"shaped \[\*sets, N, D\]"):
        twonn(torch.randn(10))


def hsic_slow(k: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Kornblith et al. 2019, eq. 3: tr(K H L H) / (n - 1)^2 with H = I - 11'/n."""
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype) - torch.ones(n, n, dtype=k.dtype) / n
    return torch.trace(k @ h @ g @ h) / (n - 1) ** 2


def hsic_unbiased_slow(k: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Song et al. 2012, eq. 5, on Gram matrices with their diagonals zeroed."""
    n = k.shape[0]
    k, g = k - torch.diag(k.diagonal()), g - torch.diag(g.diagonal())
    one = torch.ones(n, 1, dtype=k.dtype)
    first = torch.trace(k @ g)
    second = (one.T @ k @ one) * (one.T @ g @ one) / ((n - 1) * (n - 2))
    third = 2 / (n - 2) * (one.T @ k @ g @ one)
    return ((first + second - third) / (n * (n - 3))).squeeze()


def cka_slow(x: torch.Tensor, y: torch.Tensor, hsic) -> torch.Tensor:
    x, y = x.double(), y.double()
    k, g = x @ x.T, y @ y.T  # the Gram matrices K and L
    return hsic(k, g) / (hsic(k, k) * hsic(g, g)).sqrt()


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_cka_matches_the_paper_with_centering_matrices(debiased):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 7, generator=g)
    y = torch.tanh(x @ torch.randn(7, 5, generator=g)) + 0.3 * torch.randn(60, 5, generator=g)
    slow = cka_slow(x, y, hsic_unbiased_slow if debiased else hsic_slow)
    torch.testing.assert_close(linear_cka(x, y, debiased=debiased), slow)


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_cka_invariances(debiased):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    one = torch.tensor(1.0, dtype=torch.float64)
    torch.testing.assert_close(linear_cka(x, x, debiased=debiased), one)
    torch.testing.assert_close(linear_cka(x, 2.5 * x.double() @ q, debiased=debiased), one)
    y = torch.randn(80, 4, generator=g)
    base = linear_cka(x, y, debiased=debiased)
    moved = linear_cka(x.double() @ q * 0.1 + 7.0, 3.0 * y, debiased=debiased)
    torch.testing.assert_close(moved, base)
    assert float(base) < 0.3  # unrelated representations


def test_cka_is_batched_and_the_matrix_is_symmetric():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 40, 5, generator=g), torch.randn(3, 40, 2, generator=g)
    got = linear_cka(x, y)
    assert got.shape == (3,)
    torch.testing.assert_close(got[1], linear_cka(x[1], y[1]))
    reps = {"a": x[0], "b": torch.relu(x[0]), "conv": torch.randn(40, 2, 3, 3, generator=g)}
    m = cka_matrix(reps)
    assert m.shape == (3, 3) and torch.equal(m, m.T)
    torch.testing.assert_close(m.diagonal(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(m[0, 2], linear_cka(reps["a"], reps["conv"].reshape(40, -1)))


def test_cka_errors():
    with pytest.raises(ValueError, match="must hold the same samples"):
        linear_cka(torch.randn(10, 3), torch.randn(9, 3))
    with pytest.raises(ValueError, match="CKA needs at least 4 samples"):
        linear_cka(torch.randn(3, 3), torch.randn(3, 3), debiased=True)
    with pytest.raises(ValueError, match="constant representation"):
        linear_cka(torch.ones(10, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="sample counts"):
        cka_matrix({"a": torch.randn(10, 3), "b": torch.randn(8, 3)})
