"""KernelSHAP (Lundberg and Lee, 2017): Shapley values from a constrained linear fit."""

from __future__ import annotations

import torch

from tdhook_rl.attribution._perturb import (
    Background,
    CoalitionMethod,
    FeatureMask,
    check_n_samples,
    describe,
)
from tdhook_rl.attribution._seeded import Seeded
from tdhook_rl.attribution.baselines import Baselines


class KernelShap(Seeded, CoalitionMethod):
    """Shapley values as the weighted least-squares fit of a linear model on coalitions.

    ``n_samples`` coalitions are drawn from the Shapley kernel: a size ``k`` in ``1..G-1``
    with probability proportional to ``(G - 1) / (k (G - k))``, then ``k`` groups uniformly
    (captum's ``KernelShap`` sampling). The linear model ``f(S) ~ f(b) + sum_{i in S} phi_i``
    is fitted under the efficiency constraint ``sum_i phi_i = f(x) - f(b)`` (the SHAP paper's
    formulation; captum approximates the constraint with weights of 10^6 on the empty and
    full coalitions), in closed form: one pseudo-inverse of the coalition matrix, shared by
    every sample and target of the batch. The coalitions of all samples and targets go
    through one forward (one per ``chunk_size`` coalitions); they are drawn from the
    method's own seeded generator, a fresh stream per call.

    The completeness delta (zero up to rounding, by the constraint) is written beside the
    attributions.

    Args:
        n_samples: the number of sampled coalitions (besides the empty and the full one).
        feature_mask: as for :class:`~tdhook_rl.attribution.ExactShapley`.
        baseline: as for :class:`~tdhook_rl.attribution.ExactShapley`.
        background: as for :class:`~tdhook_rl.attribution.ExactShapley`.
        seed: seed of the method's generator.
        chunk_size: at most this many coalitions per forward.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(6, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, KernelShap(n_samples=64), inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> x = torch.randn(3, 6)
        >>> out = explained(TensorDict(observation=x, batch_size=[3]))
        >>> want = net.module.weight[0] * x  # exact for a linear model
        >>> torch.testing.assert_close(out["attribution", "value", "observation"], want)
    """

    has_convergence_delta = True

    def __init__(
        self,
        n_samples: int = 64,
        feature_mask: FeatureMask = None,
        baseline: Baselines = 0.0,
        background: Background = None,
        seed: int = 0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(feature_mask, baseline, background, chunk_size)
        self.n_samples = check_n_samples(n_samples)
        self._seeded(seed)

    def sample(self, n_groups: int, device: torch.device) -> torch.Tensor:
        """``(n_samples, n_groups)`` bool coalitions from the Shapley kernel (none when there
        is a single group: its value is ``f(x) - f(b)``)."""
        if n_groups < 2:
            return torch.zeros(0, n_groups, dtype=torch.bool, device=device)
        generator = self.generator(device)
        k = torch.arange(1, n_groups, device=device, dtype=torch.float64)
        probs = (n_groups - 1) / (k * (n_groups - k))
        size = torch.multinomial(probs, self.n_samples, True, generator=generator) + 1  # (n,)
        noise = torch.rand(self.n_samples, n_groups, generator=generator, device=device)
        rank = noise.argsort(-1).argsort(-1)  # a uniform random ordering per sample
        return rank < size[:, None]  # its first ``size`` groups

    def coalitions(self, n_groups: int, device: torch.device) -> torch.Tensor:
        ends = (torch.arange(2, device=device) == 1)[:, None].expand(2, n_groups)
        return torch.cat([ends, self.sample(n_groups, device)])  # empty, full, samples

    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = present.shape[1]
        empty, full, y = values[:, 0], values[:, 1], values[:, 2:]  # y: (n_t, n, *batch)
        gap = full - empty  # (n_t, *batch)
        if g == 1:
            return gap[..., None], torch.zeros_like(gap)
        z = present[2:].to(values.dtype)  # (n, G)
        # phi_G = gap - sum_{i<G} phi_i turns the constrained fit into an unconstrained one:
        # y - f(b) - z_G gap = sum_{i<G} (z_i - z_G) phi_i
        design = z[:, :-1] - z[:, -1:]  # (n, G - 1)
        last = z[:, -1].reshape(1, -1, *[1] * (gap.ndim - 1))  # (1, n, *[1] * batch_dims)
        rhs = y - empty[:, None] - last * gap[:, None]
        solve = torch.linalg.pinv(design)  # (G - 1, n), shared by every sample and target
        head = torch.tensordot(solve, rhs, dims=([1], [1])).movedim(0, -1)  # (n_t, *b, G-1)
        phi = torch.cat([head, (gap - head.sum(-1))[..., None]], -1)  # (n_t, *batch, G)
        return phi, phi.sum(-1) - gap

    def __repr__(self) -> str:
        return (
            f"KernelShap(n_samples={self.n_samples}, feature_mask={describe(self.feature_mask)}, "
            f"baseline={describe(self.baseline)}, seed={self.seed}, chunk_size={self.chunk_size})"
        )
