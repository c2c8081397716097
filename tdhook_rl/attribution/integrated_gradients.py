"""Integrated gradients (Sundararajan et al., 2017), every target from one batched pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult, sum_features
from tdhook_rl.attribution.baselines import (
    Baselines,
    baseline_keys,
    check_baseline_keys,
    normalize_baselines,
    resolve_baseline,
)
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.quadrature import quadrature


class IntegratedGradients(AttributionMethod):
    """``(x - b) * integral_0^1 d target(b + a (x - b)) / dx da``, per target and feature.

    All ``n_steps`` points of the path and all targets go through one forward and one
    batched backward (or ``ceil(n_steps / chunk_size)`` of them when ``chunk_size`` bounds
    memory). The completeness delta ``sum(attribution) - (f(x) - f(b))`` is written beside
    the attributions.

    Args:
        n_steps: number of points on the path (>= 2).
        rule: ``"gausslegendre"`` (default, as in captum), ``"riemann_left"``,
            ``"riemann_right"``, ``"riemann_middle"`` or ``"riemann_trapezoid"``.
        baseline: ``0.0`` by default; a number, a tensor broadcastable to the input, a key of
            the input TensorDict, or a mapping ``input key -> one of these`` (inputs it does
            not name get zero; a key that is not an input is an error when the wrapper is
            built).
        chunk_size: at most this many path points per pass; ``None`` for all at once.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
        ...                        torch.nn.Linear(8, 1)), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, IntegratedGradients(n_steps=64),
        ...                            inputs=["observation"], targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> out["attribution", "value", "observation"].shape
        torch.Size([5, 3])
        >>> bool(out["attribution", "value", "completeness_delta"].abs().max() < 1e-3)
        True
    """

    has_convergence_delta = True

    def __init__(
        self,
        n_steps: int = 50,
        rule: str = "gausslegendre",
        baseline: Baselines = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        self.alphas, self.weights = quadrature(rule, n_steps)  # validates rule and n_steps
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.n_steps = n_steps
        self.rule = rule
        self.baseline = normalize_baselines(baseline)
        self.chunk_size = chunk_size
        self.context_keys = baseline_keys(self.baseline)
        self._rule_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def rule_tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points and weights on ``like``'s device and dtype, copied there once (no per-call
        host-to-device copy in the hot path)."""
        slot = (like.device, like.dtype)
        if slot not in self._rule_cache:
            self._rule_cache[slot] = (
                torch.tensor(self.alphas, dtype=like.dtype, device=like.device),
                torch.tensor(self.weights, dtype=like.dtype, device=like.device),
            )
        alphas, weights = self._rule_cache[slot]
        return alphas, weights

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rule_cache": {}}

    def check_inputs(self, inputs: Sequence[NestedKey]) -> None:
        check_baseline_keys(self.baseline, inputs)

    def check(self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase) -> None:
        for key, x in inputs.items():
            resolve_baseline(self.baseline, key, x, td)

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        batch_dims = len(engine.batch_shape)
        alphas, weights = self.rule_tensors(next(iter(inputs.values())))
        baselines = {
            k: resolve_baseline(self.baseline, k, x, engine.context) for k, x in inputs.items()
        }
        diffs = {k: x - baselines[k] for k, x in inputs.items()}
        chunk = self.chunk_size or self.n_steps
        integrals: dict[NestedKey, torch.Tensor] = {}
        for start in range(0, self.n_steps, chunk):
            a = alphas[start : start + chunk]
            w = weights[start : start + chunk]
            # (*batch, *f) -> (c, *batch, *f): the path points of this chunk
            path = {
                k: baselines[k] + a.view(-1, *[1] * x.ndim) * diffs[k] for k, x in inputs.items()
            }
            grads = engine.gradients(path, lead=(a.numel(),))  # (n_t, c, *batch, *f)
            for k, g in grads.items():
                part = torch.tensordot(w, g, dims=([0], [1]))  # (n_t, *batch, *f)
                integrals[k] = part if k not in integrals else integrals[k] + part
        attributions = {k: integrals[k] * diffs[k] for k in inputs}
        # completeness: sum(attribution) - (f(x) - f(b)), from one extra grad-free pass
        with torch.no_grad():
            ends = {k: torch.stack([baselines[k], x]) for k, x in inputs.items()}
            f = engine.evaluate(ends, lead=(2,))  # (n_t, 2, *batch)
        total = sum(sum_features(a, 1 + batch_dims) for a in attributions.values())
        delta = total - (f[:, 1] - f[:, 0])
        return AttributionResult(attributions, delta)

    def __repr__(self) -> str:
        return (
            f"IntegratedGradients(n_steps={self.n_steps}, rule={self.rule!r}, "
            f"baseline={self.baseline!r}, chunk_size={self.chunk_size})"
        )
