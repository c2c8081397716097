"""Infidelity and max-sensitivity against captum 0.9, one captum call per target, with the
same perturbations (the seeded draws, laid out in captum's repeat_interleave order)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient as CInputXGradient
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max

from tdhook_rl.metrics import (
    gaussian_perturbations,
    infidelity,
    sensitivity_max,
    uniform_perturbations,
)

from models import OBS


def captum_layout(draws: torch.Tensor, batch_shape) -> torch.Tensor:
    """``(n, *batch, F)`` -> ``(N * n, F)``: sample-major, as captum's repeat_interleave."""
    n = draws.shape[0]
    return draws.reshape(n, -1, OBS).transpose(0, 1).reshape(-1, OBS)


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, OBS)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_infidelity_equals_captum(batch_shape, normalize, method, mlp_case, columns, heads):
    module, explained, td = mlp_case(method, batch_shape)
    n, std, seed = 6, 0.2, 3
    result = infidelity(explained, td, n_perturb_samples=n, std=std, seed=seed, normalize=normalize)
    draws = gaussian_perturbations((n, *batch_shape, OBS), std, seed)
    noise = captum_layout(draws, batch_shape)

    def perturb(inputs):
        assert inputs.shape == noise.shape  # captum calls it once, on all draws
        return noise, inputs - noise

    x = flat(td["observation"])
    for i, head in enumerate(heads):
        expected = captum_infidelity(
            columns(module),
            perturb,
            x,
            flat(td["attribution", head, "observation"]),
            target=i,
            n_perturb_samples=n,
            normalize=normalize,
        )
        got = result.infidelity[head]
        assert got.shape == batch_shape
        torch.testing.assert_close(got.reshape(-1), expected, atol=1e-6, rtol=1e-4)
        assert result.random[head].shape == batch_shape
    assert f"seed={seed}" in result.perturbation


def test_random_attributions_are_less_faithful_on_average(mlp_case, heads):
    _, explained, td = mlp_case("saliency", (64,))
    # saliency's |gradient| vs the same values shuffled over the features
    result = infidelity(explained, td, n_perturb_samples=16, std=0.3)
    for head in heads:
        assert result.infidelity[head].mean() < result.random[head].mean()


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_sensitivity_max_equals_captum(batch_shape, mlp_case, columns, heads):
    module, explained, td = mlp_case("input_x_gradient", batch_shape)
    n, radius, seed = 5, 0.05, 11
    result = sensitivity_max(explained, td, n_perturb_samples=n, perturb_radius=radius, seed=seed)
    delta = captum_layout(uniform_perturbations((n, *batch_shape, OBS), radius, seed), batch_shape)

    def perturb(inputs, perturb_radius):
        assert perturb_radius == radius
        return inputs + delta

    x = flat(td["observation"])
    explain = CInputXGradient(columns(module)).attribute
    for i, head in enumerate(heads):
        expected = captum_sensitivity_max(
            explain,
            x,
            perturb_func=perturb,
            perturb_radius=radius,
            n_perturb_samples=n,
            target=i,
        )
        got = result.sensitivity[head]
        assert got.shape == batch_shape
        torch.testing.assert_close(got.reshape(-1), expected, atol=1e-6, rtol=1e-4)


def test_sensitivity_runs_the_method_once_for_all_perturbations(monkeypatch, mlp_case):
    _, explained, td = mlp_case("saliency", (4, 3))
    calls = []
    attribute = type(explained.method).attribute

    def counting(self, engine, inputs):
        calls.append(tuple(engine.batch_shape))
        return attribute(self, engine, inputs)

    monkeypatch.setattr(type(explained.method), "attribute", counting)
    sensitivity_max(explained, td, n_perturb_samples=7)
    assert calls == [(7, 4, 3)]


def test_bad_inputs(mlp_case):
    _, explained, td = mlp_case("saliency", (5,))
    with pytest.raises(ValueError, match="n_perturb_samples must be an int >= 1"):
        infidelity(explained, td, n_perturb_samples=0)
    with pytest.raises(KeyError, match="no attribution for head 'logit0'"):
        sensitivity_max(explained, td.exclude(("attribution", "logit0")), heads="logit0")
    bad = td.exclude(("attribution", "value", "observation"))
    bad["attribution", "value", "observation"] = torch.zeros(5, 3)
    with pytest.raises(ValueError, match=r"has shape \(5, 3\), the input \(5, 9\)"):
        infidelity(explained, bad, heads="value")
