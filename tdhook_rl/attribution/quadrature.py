"""Quadrature rules for path integrals on [0, 1], with captum's names and conventions."""

from __future__ import annotations

import numpy as np

RULES: tuple[str, ...] = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)


def quadrature(rule: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Points ``alphas`` in [0, 1] and weights such that ``sum(w * f(a)) ~ integral_0^1 f``.

    Examples:
        >>> quadrature("riemann_trapezoid", 3)
        ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    if rule not in RULES:
        raise ValueError(f"unknown integration rule {rule!r}; choose one of {list(RULES)}")
    if not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an integer >= 2, got {n_steps!r}")
    n = n_steps
    if rule == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(n)  # on [-1, 1]
        return (0.5 * (points + 1)).tolist(), (0.5 * weights).tolist()
    if rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] = 0.5 / (n - 1)
        return alphas.tolist(), weights.tolist()
    start = {"riemann_left": 0.0, "riemann_right": 1.0 / n, "riemann_middle": 0.5 / n}[rule]
    alphas = start + np.arange(n) / n
    return alphas.tolist(), [1.0 / n] * n
