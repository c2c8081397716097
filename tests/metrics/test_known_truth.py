"""Models whose true reliance is known by construction: the metrics and the methods must rank
correctly there (a policy that ignores injected distractors, a linear controller with
analytic attributions, a feature copied twice)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import tdhook_rl as thr
from tdhook_rl.attribution import (
    ExactShapley,
    FeatureAblation,
    IntegratedGradients,
    Saliency,
)
from tdhook_rl.metrics import (
    deletion_curve,
    infidelity,
    insertion_curve,
    prediction_gap,
    sensitivity_max,
)

REAL, DISTRACTORS = 3, 6
F = REAL + DISTRACTORS


class FirstFeatures(nn.Module):
    """An MLP on the first ``REAL`` features: the others provably cannot matter."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(REAL, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[..., :REAL])


METHODS = {
    "saliency": lambda: Saliency(),
    "ig": lambda: IntegratedGradients(n_steps=16),
    "ablation": lambda: FeatureAblation(),
    "shapley": lambda: ExactShapley(),
}


def distractor_case(method):
    torch.manual_seed(0)
    module = TensorDictModule(FirstFeatures(), ["observation"], ["logits"])
    explained = thr.Attributed(
        module, method, inputs=["observation"], targets={"a": ("logits", 0), "b": ("logits", 1)}
    )
    td = explained(TensorDict(observation=torch.randn(32, F) + 1.0, batch_size=[32]))
    return explained, td


@pytest.mark.parametrize("name", list(METHODS))
def test_distractors_get_nothing_and_are_deleted_last(name):
    explained, td = distractor_case(METHODS[name]())
    for head in ("a", "b"):
        attr = td["attribution", head, "observation"]
        # the distractors get nothing (Shapley: up to the rounding of its coalition sums)
        assert float(attr[:, REAL:].abs().max()) < 1e-6
        assert bool((attr[:, :REAL].abs().amin(-1) > attr[:, REAL:].abs().amax(-1)).all())
    deleted = deletion_curve(explained, td, n_random=8)
    inserted = insertion_curve(explained, td, n_random=8)
    for head in ("a", "b"):
        curve = deleted.values[head]  # the real features go first: flat after k = REAL
        assert torch.allclose(curve[REAL:], curve[-1:].expand_as(curve[REAL:]))
        full = inserted.values[head]
        assert torch.allclose(full[REAL:], full[-1:].expand_as(full[REAL:]))
        # chance deletes distractors too: at k = REAL it has not reached the end point yet
        gap = (deleted.random[head][REAL] - curve[-1]).abs().mean()
        assert gap > 1e-3
    gap = prediction_gap(explained, td, DISTRACTORS)
    for head in ("a", "b"):
        assert float(gap.pgu[head].abs().max()) == 0.0  # noise on the distractors only
        assert bool((gap.pgi[head] > 0).all())


def test_deleting_only_distractors_changes_nothing():
    explained, td = distractor_case(Saliency())
    # an attribution that ranks the distractors first
    fake = td.clone()
    fake["attribution", "a", "observation"] = torch.cat(
        [torch.zeros(32, REAL), torch.ones(32, DISTRACTORS)], -1
    )
    curve = deletion_curve(explained, fake, heads="a", ks=range(DISTRACTORS + 1)).values["a"]
    assert torch.equal(curve, td["logits"][:, 0].expand_as(curve))


def linear_case(batch_shape):
    """A linear controller ``action = -K x + c`` (LQR-like, two action dimensions)."""
    torch.manual_seed(1)
    gain = nn.Linear(F, 2)
    module = TensorDictModule(gain, ["observation"], ["action"])
    td = TensorDict(observation=torch.randn(*batch_shape, F), batch_size=batch_shape)
    return gain, module, td


def test_linear_policy_attributions_and_curves_are_analytic(batch_shape):
    gain, module, td = linear_case(batch_shape)
    targets = {"u0": ("action", 0), "u1": ("action", 1)}
    explained = thr.Attributed(
        module, IntegratedGradients(n_steps=4), inputs=["observation"], targets=targets
    )
    td = explained(td)
    x = td["observation"]
    result = deletion_curve(explained, td)
    for i, head in enumerate(targets):
        exact = gain.weight[i].detach() * x  # IG with a zero baseline is exact on a linear map
        torch.testing.assert_close(td["attribution", head, "observation"], exact)
        order = exact.abs().argsort(dim=-1, descending=True, stable=True)
        removed = exact.gather(-1, order).cumsum(-1)  # the top-k contributions, summed
        u = td["action"][..., i]
        expected = torch.cat([u[None], (u[..., None] - removed).movedim(-1, 0)])
        torch.testing.assert_close(result.values[head], expected, atol=1e-5, rtol=1e-5)


def test_linear_policy_gradient_is_exactly_faithful():
    _, module, td = linear_case((16,))
    explained = thr.Attributed(
        module,
        Saliency(abs=False),
        inputs=["observation"],
        targets={"u0": ("action", 0), "u1": ("action", 1)},
    )
    td = explained(td)
    fidelity = infidelity(explained, td, std=0.5)
    sensitivity = sensitivity_max(explained, td)
    for head in ("u0", "u1"):
        assert float(fidelity.infidelity[head].max()) < 1e-10  # f(x) - f(x - I) = w . I
        assert float(fidelity.random[head].min()) > 0  # shuffled weights are not
        assert float(sensitivity.sensitivity[head].max()) == 0.0  # the gradient is constant


class CopiedTwice(nn.Module):
    """Reads feature 0 and its copy, feature 1, symmetrically, and feature 2 weakly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x[..., 0] + x[..., 1] + 0.1 * x[..., 2])[..., None]


@pytest.mark.parametrize("name", ["ig", "shapley"])
def test_a_feature_copied_twice_shares_its_credit(name):
    module = TensorDictModule(CopiedTwice(), ["observation"], ["state_value"])
    explained = thr.Attributed(
        module, METHODS[name](), inputs=["observation"], targets={"value": "state_value"}
    )
    obs = torch.rand(20, 3) + 0.5
    obs[:, 1] = obs[:, 0]  # the copy
    td = explained(TensorDict(observation=obs, batch_size=[20]))
    attr = td["attribution", "value", "observation"]
    torch.testing.assert_close(attr[:, 0], attr[:, 1])  # symmetry: equal credit
    assert bool((attr[:, 0].abs() > attr[:, 2].abs()).all())
    curve = deletion_curve(explained, td, ks=[0, 1, 2, 3]).values["value"]
    one_copy = torch.tanh(obs[:, 0] + 0.1 * obs[:, 2])  # deleting one copy halves the drive
    torch.testing.assert_close(curve[1], one_copy)
    torch.testing.assert_close(curve[2], torch.tanh(0.1 * obs[:, 2]))
