"""Input checks and float64 streaming statistics behind the linear probes
(``linear_probes``) and the probing pipeline (``probes``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validates ``features [N, D]`` and ``labels [N]`` / ``[N, L]``; returns 2-D labels."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(
            f"features must be a floating [N, D] tensor (flatten trailing dims with "
            f".flatten(1)), got {getattr(x, 'shape', type(x).__name__)}"
        )
    if not isinstance(y, torch.Tensor) or y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"features and labels have mismatched batch shapes: features "
            f"{tuple(x.shape)}, labels {tuple(getattr(y, 'shape', ()))}; give labels [N] or "
            f"[N, L] with one row per feature row"
        )
    _check_finite(x, "features")
    _check_finite(y, "labels")
    return x, (y if y.ndim == 2 else y[:, None])


def _check_classes(x: torch.Tensor, y: torch.Tensor, n_classes: int | None):
    if y.dtype.is_floating_point or y.dtype.is_complex:
        raise TypeError(
            f"class labels must be integer ids or bools, got {y.dtype}; use RidgeProbe (or "
            f"kind='ridge') for real-valued labels, or .long() if they are ids"
        )
    x, y = _check_pair(x, y)
    if y.shape[1] != 1:
        raise ValueError(f"class labels must be [N], got {tuple(y.shape)}")
    y = y[:, 0].long()
    if y.numel() and (int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes)):
        raise ValueError(f"class ids must lie in [0, n_classes={n_classes}), got {y.unique()}")
    return x, y


def _check_finite(t: torch.Tensor, what: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(
            f"{what} contain {int(t.isnan().sum())} NaN and {int(t.isinf().sum())} inf values; "
            f"drop those rows or fill them before probing"
        )


def _check_varies(var: torch.Tensor, mean: torch.Tensor, names: list[str], where: str = ""):
    constant = _constant(var, mean)
    if bool(constant.any()):
        bad = [name for name, c in zip(names, constant.tolist(), strict=True) if c]
        raise ValueError(
            f"{', '.join(bad)} is constant on the {where}steps scored, so R^2 is undefined "
            f"(no variance to explain); probe a quantity that varies, or use more episodes"
        )


def _constant(var: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    # float64 rounding leaves ~1e-16 relative noise in a constant column's variance
    return (var <= 0) | (var <= 1e-20 * mean * mean)


def _scale(
    var: torch.Tensor, mean: torch.Tensor, min_std: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The standardization's scale per feature (its standard deviation; 1 where dropped) and
    which features are kept: those that are not constant and vary by ``min_std`` at least.

    A near-constant feature (a saturated tanh unit, std ~1e-5) is dropped rather than blown
    up into unit variance: on held-out data its small deviations would become huge."""
    kept = ~_constant(var, mean) & (var >= min_std * min_std)
    return torch.where(kept, var.clamp_min(0).sqrt(), torch.ones_like(var)), kept


def _check_min_std(min_std: object) -> float:
    if not isinstance(min_std, int | float) or not 0.0 <= min_std < math.inf:
        raise ValueError(f"min_std must be a finite number >= 0, got {min_std!r}")
    return float(min_std)


def _standardize(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, kept: torch.Tensor):
    dtype = torch.promote_types(x.dtype, torch.float32)
    z = (x.to(dtype) - mean.to(dtype)) / scale.to(dtype)
    return z * kept.to(dtype)


def _solve_psd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape[0] == 0:
        return b.new_zeros(0, b.shape[1])
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b, chol)
    return torch.linalg.pinv(a, hermitian=True) @ b  # alpha = 0 and collinear features


class _Moments:
    """``n``, sums, ``X^T X``, ``X^T Y`` and ``sum(Y^2)`` in float64, of rows shifted by the
    first batch's means (so centered sums of squares do not cancel)."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        x, y = x.double(), y.double()
        if self.n == 0:
            self.px, self.py = x.mean(0), y.mean(0)
            self.sx, self.sy = x.new_zeros(x.shape[1]), y.new_zeros(y.shape[1])
            self.yy = y.new_zeros(y.shape[1])
            self.xx, self.xy = (
                x.new_zeros(x.shape[1], x.shape[1]),
                x.new_zeros(x.shape[1], y.shape[1]),
            )
        elif x.shape[1] != self.xx.shape[0] or y.shape[1] != self.xy.shape[1]:
            raise ValueError(
                f"batches disagree in width: features {x.shape[1]} vs {self.xx.shape[0]}, "
                f"labels {y.shape[1]} vs {self.xy.shape[1]}"
            )
        x, y = x - self.px, y - self.py
        self.n += x.shape[0]
        self.sx, self.sy = self.sx + x.sum(0), self.sy + y.sum(0)
        self.xx, self.xy = self.xx + x.T @ x, self.xy + x.T @ y
        self.yy = self.yy + (y * y).sum(0)

    def centered(
        self,
    ) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``n, mean_x, mean_y`` and the scatter about the means ``Sxx, Sxy``,
        ``diag(Syy)``."""
        n, dx, dy = self.n, self.sx / self.n, self.sy / self.n
        sxx = self.xx - n * torch.outer(dx, dx)
        return (
            n,
            self.px + dx,
            self.py + dy,
            sxx,
            self.xy - n * torch.outer(dx, dy),
            self.yy - n * dy * dy,
        )


class _Scaler:
    """Running mean and population variance of feature columns (float64, shifted)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift = self.s1 = self.s2 = torch.zeros(())

    def update(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        x = x.double()
        if self.n == 0:
            self.shift = x.mean(0)
            self.s1 = self.s2 = torch.zeros_like(self.shift)
        x = x - self.shift
        self.n, self.s1, self.s2 = self.n + x.shape[0], self.s1 + x.sum(0), self.s2 + (x * x).sum(0)

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.s1 / self.n
        return self.shift + d, self.s2 / self.n - d * d


class _ClassCounts:
    """Steps per class id (grows with the largest id seen)."""

    def __init__(self) -> None:
        # replaced by the first update's counts (on the labels' device)
        self.total = torch.zeros(0, dtype=torch.long)

    def update(self, y: torch.Tensor) -> None:
        if y.numel() == 0:
            return
        c = torch.bincount(y)
        if len(self.total):
            n = max(len(c), len(self.total))
            c = F.pad(c, (0, n - len(c))) + F.pad(self.total, (0, n - len(self.total)))
        self.total = c

    def n_present(self) -> int:
        return int((self.total > 0).sum())


class _ClassScore:
    """Accuracy and balanced accuracy (mean recall over classes present), accumulated."""

    def __init__(self) -> None:
        self.total, self.correct = _ClassCounts(), _ClassCounts()

    def update(self, pred: torch.Tensor, y: torch.Tensor) -> None:
        self.total.update(y)
        self.correct.update(y[pred == y])

    def result(self) -> dict[str, torch.Tensor]:
        total = self.total.total
        if total is None:
            raise ValueError("no labels to score")
        correct = self.correct.total if self.correct.total is not None else total.new_zeros(0)
        correct = F.pad(correct, (0, len(total) - len(correct))).double()
        present = total > 0
        return {
            "accuracy": correct.sum() / total.sum(),
            "balanced_accuracy": (correct[present] / total[present]).mean(),
        }
