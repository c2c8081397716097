"""Every method against captum, one captum call per target, on an MLP and a conv net."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient as CInputXGradient
from captum.attr import IntegratedGradients as CIntegratedGradients
from captum.attr import Saliency as CSaliency
from tensordict import TensorDict
from tensordict.nn import TensorDictModuleBase

import tdhook_rl as thr
from tdhook_rl.attribution import InputXGradient, IntegratedGradients, Saliency, SmoothGrad
from tdhook_rl.targets import Index

from models import N_LOGITS, OBS, actor_critic_mlp, conv_actor_critic

ATOL = 1e-5
RTOL = 1e-4


def mlp_case():
    module = actor_critic_mlp()
    targets = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)} | {"value": "state_value"}

    def forward(x: torch.Tensor) -> torch.Tensor:  # (N, 9) -> (N, 5), columns = targets
        out = module(TensorDict(observation=x, batch_size=x.shape[:1]))
        return torch.cat([out["logits"], out["state_value"]], -1)

    return module, "observation", (OBS,), targets, forward


def conv_case():
    module = conv_actor_critic()
    targets = {f"move{i}": Index("logits", i) for i in range(3)} | {"win": "win"}

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = module(TensorDict(board=x, batch_size=x.shape[:1]))
        return torch.cat([out["logits"], out["win"]], -1)

    return module, "board", (3, 5, 5), targets, forward


CASES = {"mlp": mlp_case, "conv": conv_case}


def captum_trapezoid_correction(kwargs) -> float:
    """captum's "riemann_trapezoid" weights are 1/n (halved at both ends) and sum to (n-1)/n;
    the trapezoid rule on n points uses 1/(n-1). Same points, so the results differ by exactly
    n/(n-1). tdhook_rl implements the rule itself; the tests undo captum's scale."""
    n = kwargs.get("n_steps", 50)
    return n / (n - 1) if kwargs.get("method") == "riemann_trapezoid" else 1.0


def captum_per_target(captum_method, forward, x_flat, n_targets, **kwargs):
    """(n_targets, N, *feature): captum called once per target."""
    explainer = captum_method(forward)
    scale = captum_trapezoid_correction(kwargs)
    return scale * torch.stack(
        [explainer.attribute(x_flat, target=t, **kwargs) for t in range(n_targets)]
    )


def ours(module: TensorDictModuleBase, method, key, targets, x: torch.Tensor, batch_shape):
    explained = thr.Attributed(module, method, inputs=[key], targets=targets)
    out = explained(TensorDict({key: x}, batch_size=batch_shape))
    return out, torch.stack([out["attribution", name, key] for name in targets])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    ("method", "captum_method", "kwargs"),
    [
        (Saliency(), CSaliency, {}),
        (Saliency(abs=False), CSaliency, {"abs": False}),
        (InputXGradient(), CInputXGradient, {}),
        (IntegratedGradients(n_steps=24), CIntegratedGradients, {"n_steps": 24}),
        (
            IntegratedGradients(n_steps=16, rule="riemann_trapezoid", baseline=0.5),
            CIntegratedGradients,
            {"n_steps": 16, "method": "riemann_trapezoid", "baselines": 0.5},
        ),
    ],
    ids=["saliency", "saliency-signed", "input_x_gradient", "ig-gl", "ig-trapezoid-const"],
)
def test_matches_captum(case, method, captum_method, kwargs, batch_shape):
    if case == "conv" and len(batch_shape) > 1:
        pytest.skip("nn.Conv2d itself accepts at most one batch dimension")
    module, key, feat, targets, forward = CASES[case]()
    x = torch.randn(*batch_shape, *feat)
    _, got = ours(module, method, key, targets, x, batch_shape)
    flat = x.reshape(-1, *feat)
    want = captum_per_target(captum_method, forward, flat, len(targets), **kwargs)
    want = want.reshape(len(targets), *batch_shape, *feat)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    "rule",
    ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"],
)
def test_ig_rules_and_delta_match_captum(rule):
    module, key, feat, targets, forward = mlp_case()
    x = torch.randn(6, *feat)
    out, got = ours(module, IntegratedGradients(n_steps=10, rule=rule), key, targets, x, (6,))
    explainer = CIntegratedGradients(forward)
    for t, name in enumerate(targets):
        want, delta = explainer.attribute(
            x, target=t, n_steps=10, method=rule, return_convergence_delta=True
        )
        scale = captum_trapezoid_correction({"n_steps": 10, "method": rule})
        torch.testing.assert_close(got[t], scale * want, atol=ATOL, rtol=RTOL)
        if scale != 1.0:  # captum's delta belongs to its own (scaled) attributions
            delta = delta + (scale - 1.0) * want.sum(-1)
        torch.testing.assert_close(
            out["attribution", name, "completeness_delta"], delta, atol=ATOL, rtol=RTOL
        )


def test_ig_baseline_from_key_matches_captum():
    module, key, feat, targets, forward = mlp_case()
    x, b = torch.randn(7, *feat), torch.randn(7, *feat)
    explained = thr.Attributed(
        module, IntegratedGradients(n_steps=12, baseline="reference"), inputs=[key], targets=targets
    )
    out = explained(TensorDict({key: x, "reference": b}, batch_size=[7]))
    explainer = CIntegratedGradients(forward)
    for t, name in enumerate(targets):
        want = explainer.attribute(x, baselines=b, target=t, n_steps=12)
        torch.testing.assert_close(out["attribution", name, key], want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("inner", ["saliency", "ig"])
def test_smoothgrad_matches_captum_inner_on_same_noise(inner):
    """SmoothGrad = mean over the noisy copies of captum's inner method, same noise draws."""
    module, key, feat, targets, forward = mlp_case()
    x = torch.randn(4, *feat)
    n, stdev, seed = 6, 0.3, 11
    if inner == "saliency":
        method, cls, kwargs = Saliency(abs=False), CSaliency, {"abs": False}
    else:
        method, cls, kwargs = IntegratedGradients(n_steps=8), CIntegratedGradients, {"n_steps": 8}
    _, got = ours(
        module, SmoothGrad(method, n_samples=n, stdev=stdev, seed=seed), key, targets, x, (4,)
    )
    noise = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(seed))
    per_sample = [
        captum_per_target(cls, forward, x + stdev * noise[s], len(targets), **kwargs)
        for s in range(n)
    ]
    want = torch.stack(per_sample).mean(0)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_smoothgrad_zero_noise_is_inner_method():
    module, key, _, targets, _ = mlp_case()
    x = torch.randn(3, OBS)
    _, plain = ours(module, IntegratedGradients(n_steps=8), key, targets, x, (3,))
    _, smooth = ours(
        module,
        SmoothGrad(IntegratedGradients(n_steps=8), n_samples=3, stdev=0.0),
        key,
        targets,
        x,
        (3,),
    )
    torch.testing.assert_close(smooth, plain, atol=1e-6, rtol=1e-5)
