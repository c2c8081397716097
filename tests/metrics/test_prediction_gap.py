"""PGI / PGU against a slow loop over heads, feature choices and noise draws."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdhook_rl.metrics import prediction_gap

from models import OBS


def read(module, obs, head):
    out = module(TensorDict(observation=obs, batch_size=obs.shape[:-1]))
    return out["state_value"][..., 0] if head == "value" else out["logits"][..., int(head[-1])]


def test_prediction_gap_matches_a_slow_loop(batch_shape, mlp_case, heads):
    module, explained, td = mlp_case("ig", batch_shape)
    k, std, n, seed = 3, 0.25, 4, 5
    result = prediction_gap(explained, td, k, std=std, n_samples=n, seed=seed)
    x = td["observation"]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *batch_shape, OBS), generator=gen) * std
    random = torch.rand((n, *batch_shape, OBS), generator=gen).argsort(-1) < k
    for head in heads:
        scores = td["attribution", head, "observation"].abs()
        top = scores.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1) < k
        bottom = scores.argsort(dim=-1, stable=True).argsort(dim=-1) < k
        clean = read(module, x, head)
        for mask, got in ((top, result.pgi), (bottom, result.pgu)):
            gaps = [(read(module, x + noise[j] * mask, head) - clean).abs() for j in range(n)]
            torch.testing.assert_close(got[head], torch.stack(gaps).mean(0), atol=1e-6, rtol=1e-5)
        gaps = [(read(module, x + noise[j] * random[j], head) - clean).abs() for j in range(n)]
        torch.testing.assert_close(
            result.random[head], torch.stack(gaps).mean(0), atol=1e-6, rtol=1e-5
        )
        assert result.pgi[head].shape == batch_shape
    assert result.k == k and "seed=5" in result.perturbation


def test_all_features_make_pgi_and_pgu_equal(mlp_case, heads):
    _, explained, td = mlp_case("saliency", (6,))
    result = prediction_gap(explained, td, OBS)
    for head in heads:
        torch.testing.assert_close(result.pgi[head], result.pgu[head])
        torch.testing.assert_close(result.pgi[head], result.random[head])


def test_bad_k(mlp_case):
    _, explained, td = mlp_case("saliency", (6,))
    with pytest.raises(ValueError, match=r"k=12 is out of range: the inputs have 9 features"):
        prediction_gap(explained, td, 12)
    with pytest.raises(ValueError, match="k=0 perturbs no feature"):
        prediction_gap(explained, td, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        prediction_gap(explained, td, 0.5)
