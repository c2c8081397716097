"""LIME (Ribeiro et al., 2016): a locally weighted linear surrogate fitted on coalitions."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import NestedKey

from tdhook_rl.attribution._perturb import (
    CoalitionMethod,
    FeatureMask,
    Players,
    check_n_samples,
    describe,
    evaluate_masked,
)
from tdhook_rl.attribution._seeded import Seeded
from tdhook_rl.attribution.base import AttributionResult
from tdhook_rl.attribution.baselines import Baselines
from tdhook_rl.attribution.engine import GradientEngine


def weighted_linear_fit(
    z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float = 0.0
) -> torch.Tensor:
    """Weighted least squares ``y ~ c + z . beta``, batched over samples and targets.

    Args:
        z: ``(P, G)`` the interpretable inputs, shared by every sample.
        y: ``(n_t, P, B)`` the targets.
        weights: ``(P, B)`` each sample's weight of each row.
        alpha: ridge penalty on ``beta`` (not on the intercept).

    Returns:
        ``(n_t, B, G + 1)``: the intercept, then the coefficients (the minimum-norm solution
        when the rows do not determine them).
    """
    n_p, g = z.shape
    # in float64: the normal equations square the condition number of the design
    wide = torch.float64 if z.device.type != "mps" else z.dtype
    design = torch.cat([z.new_ones(n_p, 1), z], 1).to(wide)  # (P, G + 1)
    w = weights.to(wide)
    # normal equations per sample: (B, G + 1, G + 1) and (B, G + 1, n_t)
    gram = torch.einsum("pi,pb,pj->bij", design, w, design)
    if alpha:
        ridge = torch.full((g + 1,), alpha, dtype=wide, device=z.device)
        ridge[0] = 0.0
        gram = gram + torch.diag(ridge)
    moment = torch.einsum("pi,pb,tpb->bit", design, w, y.to(wide))
    beta = torch.linalg.pinv(gram, hermitian=True) @ moment  # (B, G + 1, n_t)
    return beta.permute(2, 0, 1).to(y.dtype)


def cosine_similarity_kernel(
    players: Players,
    inputs: Mapping[NestedKey, torch.Tensor],
    baselines: Mapping[NestedKey, torch.Tensor],
    present: torch.Tensor,
    kernel_width: float,
    batch_dims: int,
) -> torch.Tensor:
    """captum's default LIME weights ``exp(-d^2 / (2 w^2))``, ``d`` the cosine distance
    between the input and each perturbed input (all input keys flattened together), computed
    from per-group sums without building the perturbed inputs.

    Returns:
        ``(P, *batch)``.
    """
    dtype = next(iter(inputs.values())).dtype
    pres = present.to(dtype)  # (P, G)
    dot: torch.Tensor | float = 0.0
    norm_x: torch.Tensor | float = 0.0
    norm_p: torch.Tensor | float = 0.0
    for key, x in inputs.items():
        b = baselines[key].expand_as(x)
        flat_x, flat_b = x.flatten(batch_dims), b.flatten(batch_dims)  # (*batch, F)
        member = players.members[key].to(dtype)  # (G_k, F)
        start, size = players.offsets[key], member.shape[0]
        p = pres[:, start : start + size]  # (P, G_k)
        xx, xb, bb = (
            (u * v) @ member.T for u, v in ((flat_x, flat_x), (flat_x, flat_b), (flat_b, flat_b))
        )  # each (*batch, G_k): per-group sums
        # (P, G_k) x (*batch, G_k) -> (P, *batch)
        dot = dot + torch.tensordot(p, xx, ([1], [-1])) + torch.tensordot(1 - p, xb, ([1], [-1]))
        norm_p = (
            norm_p + torch.tensordot(p, xx, ([1], [-1])) + torch.tensordot(1 - p, bb, ([1], [-1]))
        )
        norm_x = norm_x + xx.sum(-1)
    eps = 1e-8  # as torch.nn.CosineSimilarity
    nx = torch.as_tensor(norm_x).sqrt().clamp_min(eps)
    npert = torch.as_tensor(norm_p).clamp_min(0).sqrt().clamp_min(eps)
    distance = 1 - dot / (nx * npert)
    return torch.exp(-(distance**2) / (2 * kernel_width**2))


class Lime(Seeded, CoalitionMethod):
    """The coefficients of a weighted linear surrogate of each target on coalitions.

    ``n_samples`` coalitions are drawn with every group present with probability 1/2
    (captum's default ``perturb_func``); absent groups take the baseline. Each sample's rows
    are weighted by captum's default similarity, ``exp(-d^2 / (2 kernel_width^2))`` with
    ``d`` the cosine distance between the input and the perturbed input, and the linear model
    ``f ~ c + sum_i beta_i z_i`` is fitted by weighted least squares in closed form (ridge
    ``alpha``; captum's default surrogate is a Lasso), batched over the samples and targets.
    The coalitions of all samples and targets go through one forward (one per
    ``chunk_size`` coalitions); they are shared by the samples of a batch and drawn from the
    method's own seeded generator, a fresh stream per call. Every feature of a group
    carries its group's coefficient.

    Args:
        n_samples: the number of coalitions.
        kernel_width: the similarity kernel's width (captum's default 1.0).
        feature_mask: as for :class:`~tdhook_rl.attribution.ExactShapley`.
        baseline: as for :class:`~tdhook_rl.attribution.ExactShapley`.
        alpha: ridge penalty of the surrogate (0: plain weighted least squares).
        seed: seed of the method's generator.
        chunk_size: at most this many coalitions per forward.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(6, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, Lime(n_samples=64), inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> x = torch.randn(3, 6)
        >>> out = explained(TensorDict(observation=x, batch_size=[3]))
        >>> want = net.module.weight[0] * x  # a linear model is its own surrogate
        >>> torch.testing.assert_close(out["attribution", "value", "observation"], want)
    """

    def __init__(
        self,
        n_samples: int = 64,
        kernel_width: float = 1.0,
        feature_mask: FeatureMask = None,
        baseline: Baselines = 0.0,
        alpha: float = 0.0,
        seed: int = 0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(feature_mask, baseline, None, chunk_size)
        if not kernel_width > 0:
            raise ValueError(f"kernel_width must be > 0, got {kernel_width!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.n_samples = check_n_samples(n_samples)
        self.kernel_width = float(kernel_width)
        self.alpha = float(alpha)
        self._seeded(seed)

    def coalitions(self, n_groups: int, device: torch.device) -> torch.Tensor:
        noise = torch.rand(
            self.n_samples, n_groups, generator=self.generator(device), device=device
        )
        return noise < 0.5

    def combine(
        self, present: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError("Lime weighs each sample's rows: see attribute()")

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        batch = engine.batch_shape
        players = self.players(inputs, len(batch))
        baselines, _ = self.resolve(inputs, engine.context, len(batch))
        device = next(iter(inputs.values())).device
        present = self.coalitions(players.n, device)  # (P, G)
        values = evaluate_masked(
            engine, inputs, baselines, players.off_masks(present), self.chunk_size
        )  # (n_t, P, *batch)
        weights = cosine_similarity_kernel(
            players, inputs, baselines, present, self.kernel_width, len(batch)
        )  # (P, *batch)
        n_t, n_p, n_b = values.shape[0], values.shape[1], batch.numel()
        beta = weighted_linear_fit(
            present.to(values.dtype),
            values.reshape(n_t, n_p, n_b),
            weights.reshape(n_p, n_b),
            self.alpha,
        )  # (n_t, B, G + 1)
        coefficients = beta[..., 1:].reshape(n_t, *batch, players.n)
        return AttributionResult(players.spread(coefficients))

    def __repr__(self) -> str:
        return (
            f"Lime(n_samples={self.n_samples}, kernel_width={self.kernel_width}, "
            f"feature_mask={describe(self.feature_mask)}, baseline={describe(self.baseline)}, "
            f"alpha={self.alpha}, seed={self.seed}, chunk_size={self.chunk_size})"
        )
