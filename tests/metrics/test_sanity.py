"""Model-randomization sanity checks against a slow loop that re-creates the randomized
network for every step, and the batched Spearman correlation against the 1-D reference."""

from __future__ import annotations

import copy

import pytest
import torch

import tdhook_rl as thr
from tdhook_rl.latent.attribution_patching import spearman as spearman_1d
from tdhook_rl.metrics import average_ranks, randomizable_layers, randomization_check, spearman
from tdhook_rl.probes import randomized_copy


def test_spearman_matches_the_reference_with_ties():
    x = torch.randint(0, 4, (6, 3, 9)).float()  # many ties
    y = torch.randn(6, 3, 9)
    got = spearman(x, y)
    assert got.shape == (6, 3)
    for i in range(6):
        for j in range(3):
            expected = spearman_1d(x[i, j], y[i, j])
            if expected != expected:  # NaN: a constant row
                assert torch.isnan(got[i, j])
            else:
                assert got[i, j].item() == pytest.approx(expected, abs=1e-6)
    assert average_ranks(torch.tensor([2.0, 2.0, 1.0])).tolist() == [2.5, 2.5, 1.0]
    with pytest.raises(ValueError, match="two tensors of one shape"):
        spearman(x, y[..., :3])


def slow_check(module, method, td, layers, mode, seed, heads):
    """Per step: a fresh copy of the network with the step's layers taken from the
    seeded randomized copy, a fresh Attributed, one Spearman per head and sample."""
    drawn = dict(randomized_copy(module, seed).named_modules())
    out = {h: [] for h in heads}
    for i, path in enumerate(layers):
        net = copy.deepcopy(module)
        modules = dict(net.named_modules())
        for layer in layers[: i + 1] if mode == "cascading" else [path]:
            modules[layer].load_state_dict(drawn[layer].state_dict())
        targets = {f"logit{j}": ("logits", j) for j in range(4)} | {"value": "state_value"}
        fresh = thr.Attributed(net, method, inputs=["observation"], targets=targets)
        moved = fresh(td.select("observation").clone())
        for head in heads:
            a = td["attribution", head, "observation"].abs().reshape(-1, 9)
            b = moved["attribution", head, "observation"].abs().reshape(-1, 9)
            rows = [spearman_1d(a[s], b[s]) for s in range(a.shape[0])]
            out[head].append(torch.tensor(rows).reshape(td.batch_size))
    return {h: torch.stack(v) for h, v in out.items()}


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_randomization_matches_a_slow_loop(batch_shape, mode, mlp_case, heads):
    module, explained, td = mlp_case("input_x_gradient", batch_shape)
    before = copy.deepcopy(module.state_dict())
    result = randomization_check(explained, td, mode=mode, seed=3)
    assert result.layers == randomizable_layers(module)
    assert result.layers[0] == "module.1.module.4"  # the critic's output layer first
    slow = slow_check(module, "input_x_gradient", td, result.layers, mode, 3, heads)
    for head in heads:
        assert result.correlation[head].shape == (len(result.layers), *batch_shape)
        torch.testing.assert_close(
            result.correlation[head].double(),
            slow[head].double(),
            atol=1e-5,
            rtol=0,
            equal_nan=True,
        )
    # the caller's network is untouched
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])
    assert result.mean()["value"].shape == (len(result.layers),)


def test_heads_outside_the_randomized_layers_keep_their_maps(mlp_case):
    _, explained, td = mlp_case("saliency", (8,))
    critic = ["module.1.module.4", "module.1.module.2", "module.1.module.0"]
    result = randomization_check(explained, td, layers=critic, heads=["logit0", "value"])
    assert torch.allclose(result.correlation["logit0"], torch.tensor(1.0))
    assert result.correlation["value"][-1].mean() < 0.9


def test_bad_layers(mlp_case):
    _, explained, td = mlp_case("saliency", (4,))
    with pytest.raises(KeyError, match=r"layer 'module\.9' cannot be randomized"):
        randomization_check(explained, td, layers=["module.9"])
    with pytest.raises(ValueError, match="mode must be 'cascading' or 'independent'"):
        randomization_check(explained, td, mode="top")
    with pytest.raises(KeyError, match="no attribution for head 'value'"):
        randomization_check(explained, td.exclude("attribution"), heads="value")
