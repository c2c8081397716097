"""The sampled perturbation methods (Shapley value sampling, KernelSHAP, LIME) against captum
fed the same samples and against slow references; Greydanus's perturbation saliency against
the formula written per mask."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage
import torch
from captum._utils.models.model import Model
from captum.attr import KernelShap as CKernelShap
from captum.attr import Lime as CLime
from captum.attr import ShapleyValues as CShapleyValues
from captum.attr import ShapleyValueSampling as CShapleyValueSampling
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.attribution import (
    ExactShapley,
    KernelShap,
    Lime,
    PerturbationSaliency,
    ShapleyValueSampling,
)
from tdhook_rl.attribution.lime import weighted_linear_fit
from tdhook_rl.attribution.perturbation_saliency import gaussian_blur
from tdhook_rl.targets import Index

from models import N_LOGITS, OBS, actor_critic_mlp, conv_actor_critic

AC_TARGETS = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)} | {"value": "state_value"}
MASK = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4, 4])  # 5 groups of the 9 observation features
N_GROUPS = 5


def forward_of(module):
    def forward(x: torch.Tensor) -> torch.Tensor:  # (N, 9) -> (N, 5), columns = targets
        out = module(TensorDict(observation=x, batch_size=x.shape[:1]))
        return torch.cat([out["logits"], out["state_value"]], -1)

    return forward


def ours(method, x, batch_shape, module=None):
    module = module or actor_critic_mlp()
    explained = thr.Attributed(module, method, inputs=["observation"], targets=AC_TARGETS)
    out = explained(TensorDict(observation=x, batch_size=batch_shape))
    return out, torch.stack([out["attribution", n, "observation"] for n in AC_TARGETS])


class NumpyWeightedLeastSquares(Model):
    """A captum interpretable model: weighted least squares with an intercept, in float64
    numpy (captum's own linear models need scikit-learn or are fitted by SGD)."""

    def fit(self, train_data, **kwargs):
        xs, ys, ws = (torch.cat(parts) for parts in zip(*train_data, strict=True))
        design = np.concatenate([np.ones((len(xs), 1)), xs.double().numpy()], 1)
        root = np.sqrt(ws.double().numpy())[:, None]
        beta, *_ = np.linalg.lstsq(design * root, ys.double().numpy().reshape(-1, 1) * root)
        self.coefficients = torch.from_numpy(beta[1:, 0]).float()[None]
        return {}

    def representation(self):
        return self.coefficients

    def __call__(self, x):  # captum's Model interface; not used by the attribution
        return x.double().numpy() @ self.coefficients[0].double().numpy()


def replaying(rows: torch.Tensor):
    """A captum ``perturb_func`` yielding ``rows`` (our coalitions) one by one."""

    def perturb(original_inp, **kwargs):
        for row in rows:
            yield row.long()[None]

    return perturb


# --- Shapley value sampling -----------------------------------------------------------------


def test_svs_is_the_permutation_estimate_of_its_orderings(batch_shape):
    """The same orderings (the method's seeded generator, reproduced here), credited one group
    at a time in a Python loop."""
    x = torch.randn(*batch_shape, OBS)
    out, got = ours(ShapleyValueSampling(7, feature_mask=MASK, seed=3), x, batch_shape)
    orders = torch.rand(7, N_GROUPS, generator=torch.Generator().manual_seed(3)).argsort(-1)
    f = forward_of(actor_critic_mlp())
    flat = x.reshape(-1, OBS)
    want = torch.zeros(flat.shape[0], N_GROUPS, 5)
    for order in orders:
        present = torch.zeros(OBS, dtype=torch.bool)
        before = f(torch.zeros_like(flat))
        for g in order.tolist():
            present = present | (MASK == g)
            after = f(torch.where(present, flat, 0.0))
            want[:, g] += (after - before) / len(orders)
            before = after
    want = want[:, MASK].permute(2, 0, 1).reshape(got.shape)  # group values on every feature
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for name in AC_TARGETS:  # every ordering's credits add up to f(x) - f(0)
        assert out["attribution", name, "completeness_delta"].abs().max() < 1e-6


def test_svs_and_captum_svs_converge_to_exact_shapley():
    x = torch.randn(3, OBS)
    _, exact = ours(ExactShapley(feature_mask=MASK), x, (3,))
    want = torch.stack(
        [
            CShapleyValues(forward_of(actor_critic_mlp())).attribute(
                x, target=t, feature_mask=MASK[None]
            )
            for t in range(5)
        ]
    )
    torch.testing.assert_close(exact, want, atol=1e-5, rtol=1e-4)  # captum's exact values
    _, sampled = ours(ShapleyValueSampling(600, feature_mask=MASK), x, (3,))
    torch.manual_seed(0)
    captum = torch.stack(
        [
            CShapleyValueSampling(forward_of(actor_critic_mlp())).attribute(
                x, target=t, feature_mask=MASK[None], n_samples=600, perturbations_per_eval=64
            )
            for t in range(5)
        ]
    )
    scale = exact.abs().max()
    assert (sampled - exact).abs().max() < 0.05 * scale
    assert (captum - exact).abs().max() < 0.05 * scale


# --- KernelSHAP ------------------------------------------------------------------------------


def test_kernel_shap_matches_captum_fed_the_same_coalitions(batch_shape):
    """captum's KernelShap (weights 10^6 on the empty and full coalitions, the rest 1) on our
    coalitions, with an exact least-squares surrogate: the constrained fit, to ~1e-6."""
    x = torch.randn(*batch_shape, OBS)
    _, got = ours(KernelShap(40, feature_mask=MASK, seed=5), x, batch_shape)
    rows = KernelShap(40, seed=5).coalitions(N_GROUPS, torch.device("cpu"))  # full, empty first
    rows = rows[[1, 0, *range(2, len(rows))]]
    explainer = CKernelShap(forward_of(actor_critic_mlp()))
    explainer.perturb_func = replaying(rows)
    explainer.interpretable_model = NumpyWeightedLeastSquares()
    flat = x.reshape(-1, OBS)
    want = torch.stack(
        [
            torch.cat(
                [
                    explainer.attribute(
                        flat[i : i + 1], target=t, feature_mask=MASK[None], n_samples=len(rows)
                    )
                    for i in range(flat.shape[0])
                ]
            )
            for t in range(5)
        ]
    )
    torch.testing.assert_close(got, want.reshape(got.shape), atol=2e-5, rtol=1e-3)


def test_kernel_shap_converges_to_exact_shapley_and_is_exact_on_additive_models():
    x = torch.randn(4, OBS)
    _, exact = ours(ExactShapley(feature_mask=MASK), x, (4,))
    out, sampled = ours(KernelShap(3000, feature_mask=MASK), x, (4,))
    assert (sampled - exact).abs().max() < 0.03 * exact.abs().max()
    assert out["attribution", "value", "completeness_delta"].abs().max() < 1e-5
    torch.manual_seed(0)
    linear = TensorDictModule(torch.nn.Linear(OBS, 1), ["observation"], ["v"])
    explained = thr.Attributed(linear, KernelShap(12), inputs=["observation"], targets={"v": "v"})
    got = explained(TensorDict(observation=x, batch_size=[4]))["attribution", "v", "observation"]
    torch.testing.assert_close(got, linear.module.weight[0] * x, atol=1e-5, rtol=1e-4)


def test_kernel_shap_samples_sizes_from_the_shapley_kernel():
    rows = KernelShap(20000).sample(6, torch.device("cpu"))
    k = torch.arange(1, 6, dtype=torch.float64)
    probs = 5 / (k * (6 - k))
    probs = probs / probs.sum()
    freq = torch.bincount(rows.sum(1), minlength=6)[1:].double() / len(rows)
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)


# --- LIME ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_width", [1.0, 0.4])
def test_lime_matches_captum_fed_the_same_coalitions(kernel_width, batch_shape):
    """captum's Lime with its default cosine similarity kernel and baseline fill, on our
    coalitions, with an exact weighted least-squares surrogate."""
    x = torch.randn(*batch_shape, OBS)
    method = Lime(50, kernel_width=kernel_width, feature_mask=MASK, baseline=0.2, seed=2)
    _, got = ours(method, x, batch_shape)
    rows = Lime(50, seed=2).coalitions(N_GROUPS, torch.device("cpu"))
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    explainer = CLime(
        forward_of(actor_critic_mlp()),
        interpretable_model=NumpyWeightedLeastSquares(),
        similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width),
        perturb_func=replaying(rows),
    )
    flat = x.reshape(-1, OBS)
    want = torch.stack(
        [
            torch.cat(
                [
                    explainer.attribute(
                        flat[i : i + 1],
                        target=t,
                        baselines=0.2,
                        feature_mask=MASK[None],
                        n_samples=len(rows),
                    )
                    for i in range(flat.shape[0])
                ]
            )
            for t in range(5)
        ]
    )
    torch.testing.assert_close(got, want.reshape(got.shape), atol=5e-5, rtol=1e-3)


def test_weighted_linear_fit_is_numpy_lstsq():
    z = torch.rand(30, 4).round()
    y, w = torch.randn(3, 30, 6, dtype=torch.float64), torch.rand(30, 6, dtype=torch.float64)
    got = weighted_linear_fit(z.double(), y, w)
    design = np.concatenate([np.ones((30, 1)), z.double().numpy()], 1)
    for t, b in itertools.product(range(3), range(6)):
        root = np.sqrt(w[:, b].numpy())[:, None]
        beta, *_ = np.linalg.lstsq(design * root, y[t, :, b].numpy() * root[:, 0])
        np.testing.assert_allclose(got[t, b].numpy(), beta, atol=1e-8, rtol=1e-6)


def test_lime_is_exact_on_linear_models_and_draws_a_fresh_stream_per_call():
    torch.manual_seed(0)
    linear = TensorDictModule(torch.nn.Linear(OBS, 1), ["observation"], ["v"])
    explained = thr.Attributed(linear, Lime(40), inputs=["observation"], targets={"v": "v"})
    x = torch.randn(4, OBS)
    td = TensorDict(observation=x, batch_size=[4])
    got = explained(td.clone())["attribution", "v", "observation"]
    torch.testing.assert_close(got, linear.module.weight[0] * x, atol=1e-4, rtol=1e-3)
    _, first = ours(Lime(16), x, (4,))
    method = Lime(16)
    _, again = ours(method, x, (4,))
    _, second = ours(method, x, (4,))
    assert torch.equal(first, again) and not torch.equal(again, second)


# --- Greydanus perturbation saliency ---------------------------------------------------------


def test_gaussian_blur_is_scipys():
    image = torch.randn(2, 7, 9, dtype=torch.float64)
    want = np.stack([scipy.ndimage.gaussian_filter(i, 1.3, mode="nearest") for i in image.numpy()])
    np.testing.assert_allclose(gaussian_blur(image, 1.3).numpy(), want, atol=1e-12)


def test_perturbation_saliency_is_the_formula_at_every_centre():
    module = conv_actor_critic()
    targets = {f"move{i}": Index("logits", i) for i in range(3)} | {"win": "win"}
    x = torch.randn(3, 3, 5, 5)
    method = PerturbationSaliency(radius=1.5, stride=2, sigma=1.0, chunk_size=4)
    explained = thr.Attributed(module, method, inputs=["board"], targets=targets)
    out = explained(TensorDict(board=x, batch_size=[3]))
    got = torch.stack([out["attribution", n, "board"] for n in targets])  # (4, 3, 3, 5, 5)

    def f(board):
        o = module(TensorDict(board=board, batch_size=board.shape[:1]))
        return torch.cat([o["logits"], o["win"]], -1).T  # (4, N)

    blurred = torch.from_numpy(
        scipy.ndimage.gaussian_filter(x.numpy(), (0, 0, 1.0, 1.0), mode="nearest")
    )
    yy, xx = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    for ci, cj in itertools.product(range(0, 5, 2), repeat=2):
        mask = torch.exp(-((yy - ci) ** 2 + (xx - cj) ** 2) / (2 * 1.5**2))
        perturbed = x * (1 - mask) + blurred * mask
        score = 0.5 * (f(x) - f(perturbed)) ** 2  # (4, 3)
        for c in range(3):  # the same map on every channel
            torch.testing.assert_close(got[:, :, c, ci, cj], score, atol=1e-6, rtol=1e-4)
    # between two centres, the mean of their scores (bilinear)
    torch.testing.assert_close(got[..., 0, 1], (got[..., 0, 0] + got[..., 0, 2]) / 2)
    assert (got >= 0).all()
