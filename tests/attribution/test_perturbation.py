"""Occlusion, feature ablation and exact Shapley values against captum (one call per target)
and against the definitions written slowly; chunking, errors, rollouts, pickling."""

from __future__ import annotations

import itertools
import math
import pickle

import pytest
import torch
from captum.attr import FeatureAblation as CFeatureAblation
from captum.attr import Occlusion as COcclusion
from captum.attr import ShapleyValues as CShapleyValues
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.attribution import (
    ExactShapley,
    FeatureAblation,
    KernelShap,
    Lime,
    Occlusion,
    PerturbationSaliency,
    ShapleyValueSampling,
    resolve_method,
)
from tdhook_rl.attribution.noise import is_signed
from tdhook_rl.targets import ActionLogProb, Index

from models import N_LOGITS, OBS, PointMassEnv, actor_critic_mlp, conv_actor_critic, gaussian_actor

ATOL = 1e-5
RTOL = 1e-4
AC_TARGETS = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)} | {"value": "state_value"}
BOARD_TARGETS = {f"move{i}": Index("logits", i) for i in range(3)} | {"win": "win"}


def mlp_forward(module):
    def forward(x: torch.Tensor) -> torch.Tensor:  # (N, 9) -> (N, 5): the targets' columns
        out = module(TensorDict(observation=x, batch_size=x.shape[:1]))
        return torch.cat([out["logits"], out["state_value"]], -1)

    return forward


def conv_forward(module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = module(TensorDict(board=x, batch_size=x.shape[:1]))
        return torch.cat([out["logits"], out["win"]], -1)

    return forward


def ours(module, method, key, targets, x, batch_shape, **td):
    explained = thr.Attributed(module, method, inputs=[key], targets=targets)
    out = explained(TensorDict({key: x, **td}, batch_size=batch_shape))
    return out, torch.stack([out["attribution", name, key] for name in targets])


def captum_per_target(explainer, x_flat, n_targets, **kwargs):
    return torch.stack([explainer.attribute(x_flat, target=t, **kwargs) for t in range(n_targets)])


# --- against captum -----------------------------------------------------------------------

MLP_CASES = [
    (Occlusion(window=(3,), strides=2), COcclusion, {"sliding_window_shapes": (3,), "strides": 2}),
    (
        Occlusion(window=(4,), strides=3, baseline=0.5),
        COcclusion,
        {"sliding_window_shapes": (4,), "strides": 3, "baselines": 0.5},
    ),
    (FeatureAblation(), CFeatureAblation, {}),
    (FeatureAblation(baseline=-1.0), CFeatureAblation, {"baselines": -1.0}),
    (
        FeatureAblation(feature_mask=torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3])),
        CFeatureAblation,
        {"feature_mask": torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, 3]])},
    ),
    (
        ExactShapley(feature_mask=torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4])),
        CShapleyValues,
        {"feature_mask": torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, 4]])},
    ),
    (
        ExactShapley(feature_mask=torch.tensor([0, 1, 1, 2, 2, 3, 3, 0, 1]), baseline=0.3),
        CShapleyValues,
        {"feature_mask": torch.tensor([[0, 1, 1, 2, 2, 3, 3, 0, 1]]), "baselines": 0.3},
    ),
]


@pytest.mark.parametrize(
    ("method", "captum_method", "kwargs"),
    MLP_CASES,
    ids=["occ3s2", "occ4s3-const", "ablation", "ablation-const", "ablation-groups", "shapley",
         "shapley-const"],
)  # fmt: skip
def test_mlp_matches_captum(method, captum_method, kwargs, batch_shape):
    module = actor_critic_mlp()
    x = torch.randn(*batch_shape, OBS)
    _, got = ours(module, method, "observation", AC_TARGETS, x, batch_shape)
    want = captum_per_target(
        captum_method(mlp_forward(module)), x.reshape(-1, OBS), len(AC_TARGETS), **kwargs
    )
    torch.testing.assert_close(got, want.reshape(got.shape), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    ("method", "captum_method", "kwargs"),
    [
        (
            Occlusion(window=(1, 2, 3), strides=(1, 2, 2), baseline=0.3),
            COcclusion,
            {"sliding_window_shapes": (1, 2, 3), "strides": (1, 2, 2), "baselines": 0.3},
        ),
        (Occlusion(window=(3, 5, 5)), COcclusion, {"sliding_window_shapes": (3, 5, 5)}),
        (
            FeatureAblation(feature_mask=torch.arange(3)[:, None, None]),  # one group per channel
            CFeatureAblation,
            {"feature_mask": torch.arange(3)[:, None, None].expand(3, 5, 5)[None]},
        ),
    ],
    ids=["occ-1x2x3", "occ-whole", "ablation-channels"],
)
def test_conv_matches_captum(method, captum_method, kwargs):
    module = conv_actor_critic()
    x = torch.randn(4, 3, 5, 5)
    _, got = ours(module, method, "board", BOARD_TARGETS, x, (4,))
    want = captum_per_target(captum_method(conv_forward(module)), x, len(BOARD_TARGETS), **kwargs)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


class QCritic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        )

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([observation, action], -1))


@pytest.mark.parametrize("method", ["ablation", "shapley"])
def test_two_inputs_are_players_together_as_in_captum(method):
    """Several input keys: their groups are players jointly (captum's tuple of inputs)."""
    torch.manual_seed(0)
    critic = TensorDictModule(QCritic(), ["observation", "action"], ["q"])
    obs, act = torch.randn(6, 3), torch.randn(6, 2)
    ours_method = FeatureAblation() if method == "ablation" else ExactShapley()
    explained = thr.Attributed(
        critic,
        ours_method,
        inputs=["observation", "action"],
        targets={"q0": ("q", 0), "q1": ("q", 1)},
    )
    out = explained(TensorDict(observation=obs, action=act, batch_size=[6]))
    explainer = (CFeatureAblation if method == "ablation" else CShapleyValues)(critic.module)
    for t, name in enumerate(["q0", "q1"]):
        want_obs, want_act = explainer.attribute((obs, act), target=t)
        torch.testing.assert_close(
            out["attribution", name, "observation"], want_obs, atol=ATOL, rtol=RTOL
        )
        torch.testing.assert_close(
            out["attribution", name, "action"], want_act, atol=ATOL, rtol=RTOL
        )


# --- exact Shapley from the definition -----------------------------------------------------


def shapley_by_definition(f, x, fill, n):
    """phi_i = sum over coalitions S without i of |S|!(n-|S|-1)!/n! (f(S+i) - f(S)), where
    f(S) evaluates x with the features outside S taken from ``fill``: one Python call per
    coalition. ``fill`` (S_bg, n): the value is averaged over its rows."""

    def value(coalition):
        z = torch.tensor([i in coalition for i in range(n)])
        return torch.stack([f(torch.where(z, x, b)) for b in fill]).mean(0)

    phi = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                total = total + weight * (value({*s, i}) - value(set(s)))
        phi.append(total)
    return torch.stack(phi, -1), value(set(range(n))) - value(set())


def four_feature_net():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return TensorDictModule(net, ["observation"], ["out"]), net


@pytest.mark.parametrize("fill", ["baseline", "background"])
def test_exact_shapley_is_the_definition_and_efficient(fill, batch_shape):
    module, net = four_feature_net()
    x = torch.randn(*batch_shape, 4)
    background = torch.randn(3, 4)
    method = (
        ExactShapley(baseline=0.25) if fill == "baseline" else ExactShapley(background=background)
    )
    targets = {f"o{i}": ("out", i) for i in range(3)}
    out, got = ours(module, method, "observation", targets, x, batch_shape)
    fills = torch.full((1, 4), 0.25) if fill == "baseline" else background
    for index in itertools.product(*map(range, batch_shape)):
        want, gap = shapley_by_definition(net, x[index], fills, 4)  # (3, 4), (3,)
        torch.testing.assert_close(got[(slice(None), *index)], want, atol=1e-6, rtol=1e-5)
        deltas = torch.stack([out["attribution", n, "completeness_delta"][index] for n in targets])
        # efficiency: the values add up to f(x) - f(baseline) (or - E f(background))
        torch.testing.assert_close(got[(slice(None), *index)].sum(-1), gap, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(deltas, torch.zeros(3), atol=1e-6, rtol=0)


def test_group_values_are_carried_by_every_feature_and_delta_sums_groups():
    module, _ = four_feature_net()
    mask = torch.tensor([0, 0, 1, 1])
    x = torch.randn(5, 4)
    out, got = ours(
        module, ExactShapley(feature_mask=mask), "observation", {"o": ("out", 0)}, x, (5,)
    )
    assert torch.equal(got[..., 0], got[..., 1]) and torch.equal(got[..., 2], got[..., 3])
    f = module.module
    gap = f(x)[:, 0] - f(torch.zeros(5, 4))[:, 0]
    torch.testing.assert_close(got[0, :, [0, 2]].sum(-1), gap, atol=1e-6, rtol=1e-5)
    assert out["attribution", "o", "completeness_delta"].abs().max() < 1e-6


# --- shared behaviour ----------------------------------------------------------------------

ALL = [
    lambda c: Occlusion(window=(2,), strides=1, chunk_size=c),
    lambda c: FeatureAblation(feature_mask=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4]), chunk_size=c),
    lambda c: ExactShapley(feature_mask=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4]), chunk_size=c),
    lambda c: ShapleyValueSampling(6, chunk_size=c),
    lambda c: KernelShap(20, chunk_size=c),
    lambda c: Lime(20, chunk_size=c),
]
IDS = ["occlusion", "ablation", "exact_shapley", "svs", "kernel_shap", "lime"]


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_chunking_gives_the_same_result(make, batch_shape):
    x = torch.randn(*batch_shape, OBS)
    _, a = ours(actor_critic_mlp(), make(None), "observation", AC_TARGETS, x, batch_shape)
    chunked, b = ours(actor_critic_mlp(), make(3), "observation", AC_TARGETS, x, batch_shape)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert a.shape == (len(AC_TARGETS), *batch_shape, OBS)
    if make(None).has_convergence_delta:
        for name in AC_TARGETS:
            assert chunked["attribution", name, "completeness_delta"].shape == batch_shape


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_inside_env_rollout_actions_are_unchanged(make):
    """env.rollout with and without the wrapper: identical actions (sampled TanhNormal, the
    global generator untouched), and the attribution entries in every step."""
    explained = thr.Attributed(
        gaussian_actor(action_dim=1),
        make(None),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "loc0": ("loc", 0)},
    )
    rollouts = []
    for policy in (gaussian_actor(action_dim=1), explained):
        env = PointMassEnv(batch_size=(4,))
        env.set_seed(0)
        torch.manual_seed(7)
        rollouts.append(env.rollout(6, policy, break_when_any_done=False))
    raw, attributed = rollouts
    assert torch.equal(raw["action"], attributed["action"])
    assert attributed["attribution", "policy", "observation"].shape == (4, 6, OBS)
    assert attributed["attribution", "loc0", "observation"].abs().sum() > 0
    assert not attributed["attribution", "policy", "observation"].requires_grad


def test_pickles_and_samples_the_same_stream_again():
    explained = thr.Attributed(
        actor_critic_mlp(), Lime(16), inputs=["observation"], targets=AC_TARGETS
    )
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    copy = pickle.loads(pickle.dumps(explained))  # before any call
    first = explained(td.clone())["attribution", "value", "observation"]
    torch.testing.assert_close(copy(td.clone())["attribution", "value", "observation"], first)


def test_names_and_signs():
    for name in (
        "feature_ablation",
        "exact_shapley",
        "shapley_value_sampling",
        "kernel_shap",
        "lime",
    ):
        assert is_signed(resolve_method(name))
    assert not is_signed(resolve_method("perturbation_saliency"))  # squared changes


def test_baseline_key_and_empty_batch():
    td = TensorDict(observation=torch.randn(4, OBS), mean_obs=torch.randn(4, OBS), batch_size=[4])
    out = thr.Attributed(
        actor_critic_mlp(),
        FeatureAblation(baseline="mean_obs"),
        inputs=["observation"],
        targets=AC_TARGETS,
    )(td)
    want = captum_per_target(
        CFeatureAblation(mlp_forward(actor_critic_mlp())),
        td["observation"],
        5,
        baselines=td["mean_obs"],
    )
    torch.testing.assert_close(
        out["attribution", "logit1", "observation"], want[1], atol=ATOL, rtol=RTOL
    )
    empty = TensorDict(observation=torch.randn(0, OBS), batch_size=[0])
    for method in (Occlusion((3,)), ExactShapley(feature_mask=torch.arange(9) // 3)):
        out = thr.Attributed(
            actor_critic_mlp(), method, inputs=["observation"], targets=AC_TARGETS
        )(empty)
        assert out["attribution", "value", "observation"].shape == (0, OBS)


# --- errors ----------------------------------------------------------------------------------


def _call(method, x=None, **kwargs):
    explained = thr.Attributed(
        actor_critic_mlp(), method, inputs=["observation"], targets=AC_TARGETS, **kwargs
    )
    x = torch.randn(2, OBS) if x is None else x
    return explained(TensorDict(observation=x, batch_size=x.shape[:1]))


@pytest.mark.parametrize(
    ("method", "match"),
    [
        (Occlusion(window=(10,)), r"window \(10,\) of input 'observation' is larger than its"),
        (Occlusion(window=(2,), strides=3), r"strides \(3,\) of input 'observation' exceed the"),
        (Occlusion(window=(2, 2)), r"window for input 'observation' is \(2, 2\); give one"),
        (FeatureAblation(feature_mask=torch.arange(4)), r"feature_mask for input 'observation' has shape \(4,\), which does not broadcast to the input's feature shape \(9,\)"),  # noqa: E501
        (ExactShapley(background=torch.randn(5, 4)), r"background for input 'observation' must be samples shaped \[S, \*feature\] = \[S, 9\]"),  # noqa: E501
        (PerturbationSaliency(), r"PerturbationSaliency blurs images: input 'observation' has feature shape \(9,\)"),  # noqa: E501
    ],
    ids=["window-too-large", "stride-gap", "window-ndim", "mask-shape", "background", "not-image"],
)  # fmt: skip
def test_clear_errors(method, match):
    with pytest.raises(ValueError, match=match):
        _call(method)


SIXTEEN = (
    r"ExactShapley enumerates 2\^G coalitions and the inputs have G=17 feature groups "
    r"\(at most 16\); use ShapleyValueSampling or KernelShap"
)


def test_too_many_groups_points_to_sampling():
    wide = thr.Attributed(
        TensorDictModule(torch.nn.Linear(17, 1), ["observation"], ["state_value"]),
        ExactShapley(),
        inputs=["observation"],
        targets={"v": "state_value"},
    )
    with pytest.raises(
        ValueError,
        match=SIXTEEN,
    ):
        wide(TensorDict(observation=torch.randn(2, 17), batch_size=[2]))


def test_bad_arguments():
    with pytest.raises(
        TypeError, match="feature_mask for input 'observation' must be an integer tensor"
    ):
        _call(FeatureAblation(feature_mask=torch.ones(9)))
    with pytest.raises(
        ValueError, match="the feature_mask mapping names 'obs', which is not an input"
    ):
        _call(FeatureAblation(feature_mask={"obs": torch.arange(9)}))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        Occlusion((2,), chunk_size=0)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        KernelShap(0)
    with pytest.raises(ValueError, match="kernel_width must be > 0"):
        Lime(8, kernel_width=0.0)
