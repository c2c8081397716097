"""Linear probes solved with torch: ridge regression and multinomial logistic regression,
in memory or streamed from batches (a replay buffer larger than memory)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from tdhook_rl.latent._statistics import (
    _check_classes,
    _check_min_std,
    _check_pair,
    _check_varies,
    _ClassCounts,
    _ClassScore,
    _Moments,
    _scale,
    _Scaler,
    _solve_psd,
    _standardize,
)

__all__ = ["LogisticProbe", "RidgeProbe"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class RidgeProbe:
    """Multi-output ridge regression on standardized features, solved in closed form.

    Features are centered and scaled to unit (population) variance, labels are centered, and
    the standardized weights ``beta`` minimize ``||Y_c - Z beta||^2 + alpha ||beta||^2``
    (sums over the ``n`` rows), i.e. ``(C + alpha / n I) beta = Z^T Y_c / n`` with the
    mean-normalized Gram ``C = Z^T Z / n`` (the features' correlation matrix). ``alpha`` is
    scikit-learn's: the probe is ``Ridge(alpha)`` fitted on ``StandardScaler`` features, so
    the penalty's weight relative to the data shrinks as ``alpha / n``. Constant features are
    dropped (weight 0), and so are near-constant ones, whose standard deviation is below
    ``min_std`` (a saturated tanh unit: std ~1e-5): standardizing them would blow their small
    deviations up into unit variance and the probe would explode on held-out data (R^2 of
    -10^4 on a saturated layer); :attr:`near_constant` counts them. Statistics are
    accumulated in float64, so :meth:`fit_batches` gives the probe :meth:`fit` gives on the
    concatenated batches.

    Args:
        alpha: the penalty on the standardized weights (``>= 0``).
        min_std: features whose standard deviation is below this (in the features' units)
            are dropped; ``0`` keeps all but constant ones. The default suits activations of
            order 1 (tanh, ReLU units); lower it for features in small units.

    Attributes:
        weight: ``[D, L]``, in the units of the raw features; ``bias``: ``[L]``.
        feature_mean, feature_scale: ``[D]``, the standardization (scale 1 where constant).
        near_constant: how many features vary less than ``min_std`` on the training rows.

    Examples:
        >>> x = torch.randn(100, 3)
        >>> probe = RidgeProbe().fit(x, 2 * x[:, 0] + 1)
        >>> probe.score(x, 2 * x[:, 0] + 1) > 0.999
        tensor(True)
    """

    def __init__(self, alpha: float = 1.0, min_std: float = 1e-3) -> None:
        if not isinstance(alpha, int | float) or not 0.0 <= alpha < math.inf:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.min_std = _check_min_std(min_std)
        self.near_constant = 0
        self.weight: torch.Tensor | None = None
        self._vector = False

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> RidgeProbe:
        """Fits on ``features [N, D]`` and ``labels [N]`` or ``[N, L]``; returns ``self``."""
        return self.fit_batches([(features, labels)])

    def fit_batches(self, batches: Batches) -> RidgeProbe:
        """Fits in one pass over ``(features, labels)`` batches (e.g. read from a memmap
        replay buffer), accumulating ``n``, sums, ``X^T X`` and ``X^T Y`` in float64."""
        moments = _Moments()
        for x, y in batches:
            self._vector = y.ndim == 1
            x, y = _check_pair(x, y)
            moments.update(x, y)
        if moments.n == 0:
            raise ValueError("fit_batches got no rows: pass at least one non-empty batch")
        return self._solve(moments)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Returns ``[N, L]`` predictions (``[N]`` when fitted on 1-D labels)."""
        out = self._predict64(features).to(features.dtype)
        return out.squeeze(-1) if self._vector else out

    def score(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Returns R^2 per label (``[L]``, or a scalar for 1-D labels): sklearn's ``r2_score``
        on the scored set. Raises ``ValueError`` for a constant label (R^2 undefined)."""
        x, y = _check_pair(features, labels)
        y = y.double()
        sse = ((y - self._predict64(x)) ** 2).sum(0)
        sst = ((y - y.mean(0)) ** 2).sum(0)
        _check_varies(sst / y.shape[0], y.mean(0), [f"column {j}" for j in range(y.shape[1])])
        r2 = 1.0 - sse / sst
        return r2[0] if labels.ndim == 1 else r2

    def _fitted(self) -> torch.Tensor:
        """The weights; a clear error before ``fit``."""
        if self.weight is None:
            raise RuntimeError("this RidgeProbe is not fitted: call fit or fit_batches first")
        return self.weight

    def _predict64(self, features: torch.Tensor) -> torch.Tensor:
        weight = self._fitted()
        if features.ndim != 2 or features.shape[1] != weight.shape[0]:
            raise ValueError(
                f"features must be [N, {weight.shape[0]}] like the fitted ones, got "
                f"{tuple(features.shape)}"
            )
        return features.double() @ weight + self.bias

    def _solve(self, moments: _Moments) -> RidgeProbe:
        n, mean_x, mean_y, sxx, sxy, _ = moments.centered()
        var = sxx.diagonal() / n
        scale, kept = _scale(var, mean_x, self.min_std)
        self.near_constant = int((var < self.min_std**2).sum())
        k = kept.nonzero().squeeze(1)
        s = scale[k]
        gram = sxx[k][:, k] / (n * s[:, None] * s[None, :])  # (d, d) correlation matrix
        rhs = sxy[k] / (n * s[:, None])  # (d, L)
        beta = _solve_psd(
            gram + self.alpha / n * torch.eye(len(k), dtype=gram.dtype, device=gram.device), rhs
        )
        self.weight = sxy.new_zeros(sxy.shape)
        self.weight[k] = beta / s[:, None]
        self.bias = mean_y - mean_x @ self.weight
        self.feature_mean, self.feature_scale = mean_x, scale
        return self

    def _r2(self, test: _Moments, names: Sequence[str]) -> torch.Tensor:
        """R^2 per label on the rows summarized by ``test``, from its moments alone."""
        n, mean_x, mean_y, sxx, sxy, syy = test.centered()
        w = self._fitted()
        offset = mean_y - self.bias - mean_x @ w  # the residual's mean
        sse = syy - 2 * (w * sxy).sum(0) + (w * (sxx @ w)).sum(0) + n * offset**2
        _check_varies(syy / n, mean_y, [f"label {name!r}" for name in names], "held-out ")
        return 1.0 - sse / syy


class LogisticProbe:
    """Multinomial logistic regression on standardized features, fitted with torch.

    Minimizes the mean cross-entropy plus ``l2 / 2 * ||W||^2`` (bias not penalized).
    :meth:`fit` runs full-batch L-BFGS (strong Wolfe line search, ``max_iter`` iterations).
    :meth:`fit_batches` makes one pass for the standardization and the classes, then
    ``epochs`` passes of Adam (learning rate ``lr``, cosine-decayed), one step per batch: it
    approaches the same optimum, not bit for bit. Computations use the features' dtype
    (float32 at least).

    Args:
        n_classes: the number of classes; by default ``max(label) + 1`` of the training labels.
        l2: the penalty on the standardized weights.
        max_iter: L-BFGS iterations of :meth:`fit`.
        epochs: passes of :meth:`fit_batches`.
        lr: Adam's initial learning rate in :meth:`fit_batches`.
        min_std: features whose standard deviation is below this are dropped (see
            :class:`RidgeProbe`).

    Attributes:
        weight: ``[D, K]`` acting on standardized features
            ``(x - feature_mean) / feature_scale``; ``bias``: ``[K]``.
        near_constant: how many features vary less than ``min_std`` on the training rows.

    Examples:
        >>> x = torch.randn(200, 2)
        >>> probe = LogisticProbe().fit(x, x[:, 0] > 0)
        >>> probe.score(x, x[:, 0] > 0)["accuracy"] > 0.95
        tensor(True)
    """

    def __init__(
        self,
        n_classes: int | None = None,
        l2: float = 1e-3,
        max_iter: int = 100,
        *,
        epochs: int = 10,
        lr: float = 0.1,
        min_std: float = 1e-3,
    ) -> None:
        if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 2):
            raise ValueError(f"n_classes must be an int >= 2 or None, got {n_classes!r}")
        if not l2 >= 0 or not max_iter >= 1 or not epochs >= 1 or not lr > 0:
            raise ValueError(
                f"need l2 >= 0, max_iter >= 1, epochs >= 1, lr > 0; got l2={l2!r}, "
                f"max_iter={max_iter!r}, epochs={epochs!r}, lr={lr!r}"
            )
        self.n_classes, self.l2, self.max_iter = n_classes, float(l2), int(max_iter)
        self.epochs, self.lr = int(epochs), float(lr)
        self.min_std = _check_min_std(min_std)
        self.near_constant = 0
        self.weight: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> LogisticProbe:
        """Fits on ``features [N, D]`` and integer or bool ``labels [N]``; returns ``self``."""
        x, y = _check_classes(features, labels, self.n_classes)
        scaler, counts = _Scaler(), _ClassCounts()
        scaler.update(x)
        counts.update(y)
        self._begin(scaler, counts, x.dtype, 1)
        z = _standardize(x, *self._standardization())
        with torch.inference_mode(False), torch.enable_grad():
            z, y = z.clone(), y.clone()  # inference tensors cannot be saved for backward
            opt = torch.optim.LBFGS(
                self._params,
                max_iter=self.max_iter,
                tolerance_grad=1e-10,
                tolerance_change=1e-14,
                history_size=20,
                line_search_fn="strong_wolfe",
            )

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = self._loss(z, y)
                loss.backward()
                return loss

            opt.step(closure)
        return self._end()

    def fit_batches(
        self, batches: Batches | Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    ) -> LogisticProbe:
        """Fits with ``1 + epochs`` passes over ``batches``: a re-iterable (a list, a
        DataLoader) or a callable returning a fresh iterator of ``(features, labels)``."""
        if callable(batches):
            start = batches
        elif iter(batches) is batches:
            raise TypeError(
                "fit_batches makes several passes over the batches; give a list or a callable "
                "returning a fresh iterator, not a one-shot iterator or generator"
            )
        else:
            start = batches.__iter__
        scaler, counts, n_steps = _Scaler(), _ClassCounts(), 0
        dtype = torch.float32
        for x, y in start():
            x, y = _check_classes(x, y, self.n_classes)
            scaler.update(x)
            counts.update(y)
            n_steps, dtype = n_steps + 1, x.dtype
        self._begin(scaler, counts, dtype, self.epochs * n_steps)
        for _ in range(self.epochs):
            for x, y in start():
                x, y = _check_classes(x, y, self.n_classes)
                self._step(_standardize(x, *self._standardization()), y)
        return self._end()

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Returns class probabilities ``[N, K]``."""
        if self.weight is None:
            raise RuntimeError("this LogisticProbe is not fitted: call fit or fit_batches first")
        z = _standardize(features, *self._standardization())
        return torch.softmax(z @ self.weight.to(z.dtype) + self.bias.to(z.dtype), -1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Returns the most probable class per row, ``[N]`` (long)."""
        return self.predict_proba(features).argmax(-1)

    def score(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``{"accuracy", "balanced_accuracy"}`` (sklearn's definitions: balanced
        accuracy is the mean recall over the classes present in ``labels``)."""
        _, y = _check_classes(features, labels, None)
        counts = _ClassScore()
        counts.update(self.predict(features), y)
        return counts.result()

    def _begin(self, scaler: _Scaler, counts: _ClassCounts, dtype: torch.dtype, steps: int):
        if counts.n_present() < 2:
            raise ValueError(
                "the training labels hold a single class (or none): a classifier has nothing "
                "to learn; probe a label that varies (or more episodes)"
            )
        k = self.n_classes or len(counts.total)
        if len(counts.total) > k:
            raise ValueError(f"labels go up to {len(counts.total) - 1} but n_classes={k}")
        self.n_classes_ = k
        self.feature_mean, var = scaler.mean_var()
        self.feature_scale, self._kept = _scale(var, self.feature_mean, self.min_std)
        self.near_constant = int((var < self.min_std**2).sum())
        dtype = torch.promote_types(dtype, torch.float32)
        device = self.feature_mean.device
        with torch.inference_mode(False):
            w = torch.zeros(len(var), k, dtype=dtype, device=device, requires_grad=True)
            self._params = [w, torch.zeros(k, dtype=dtype, device=device, requires_grad=True)]
        self._opt = torch.optim.Adam(self._params, lr=self.lr)
        total = max(steps, 1)
        self._sched = torch.optim.lr_scheduler.LambdaLR(
            self._opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i / total, 1)))
        )

    def _standardization(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.feature_mean, self.feature_scale, self._kept

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w, b = self._params
        return F.cross_entropy(z @ w + b, y) + 0.5 * self.l2 * (w * w).sum()

    def _step(self, z: torch.Tensor, y: torch.Tensor) -> None:
        if y.numel() == 0:
            return
        with torch.inference_mode(False), torch.enable_grad():
            self._opt.zero_grad()
            self._loss(z.clone(), y.clone()).backward()
            self._opt.step()
            self._sched.step()

    def _end(self) -> LogisticProbe:
        self.weight, self.bias = (p.detach() for p in self._params)
        del self._params, self._opt, self._sched
        return self
