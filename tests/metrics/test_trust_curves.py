"""Grouped, normalized deletion/insertion curves and the all-layers randomization, against
slow per-k loops and against the per-layer randomization_check."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.metrics import deletion_curve, randomization_check
from tdhook_rl.metrics.trust import grouped_curves, randomized_network_correlation, square_groups

from models import conv_actor_critic


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_each_feature_alone_matches_deletion_curve_and_a_slow_loop(mlp_case, mode):
    torch.manual_seed(0)
    module, explained, td = mlp_case("input_x_gradient", batch_shape=(6,))
    result = grouped_curves(explained, td, mode=mode, heads=["value", "logit1"])
    x = td["observation"]
    for head, key, index in (("value", "state_value", 0), ("logit1", "logits", 1)):
        a = td["attribution", head, "observation"].abs()
        order = torch.argsort(a, dim=-1, descending=True, stable=True)
        curve = []
        for k in range(10):  # slow: one forward per k
            keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, order[:, :k], True)
            moved = torch.where(keep, 0.0, x) if mode == "deletion" else torch.where(keep, x, 0.0)
            curve.append(module(TensorDict(observation=moved, batch_size=[6]))[key][:, index])
        curve = torch.stack(curve)  # (K, 6)
        d = (curve - curve[-1]).abs().mean(-1)
        assert torch.allclose(result.curve[head], d / d[0], atol=1e-5)
        fractions = torch.arange(10) / 9
        assert torch.allclose(result.auc[head], torch.trapezoid(d / d[0], fractions), atol=1e-5)
    if mode == "deletion":  # the same curves as deletion_curve, only normalized
        plain = deletion_curve(explained, td, heads="value")
        end = plain.values["value"][-1]
        d = (plain.values["value"] - end).abs().mean(-1)
        assert torch.allclose(result.curve["value"], d / d[0], atol=1e-5)


def test_square_groups_remove_all_planes_of_a_square_together():
    torch.manual_seed(0)
    module = conv_actor_critic()
    explained = thr.Attributed(module, "saliency", inputs=["board"], targets={"value": "win"})
    board = torch.randn(4, 3, 5, 5)
    td = explained(TensorDict(board=board, batch_size=[4]))
    groups = square_groups(3, 5, 5)
    result = grouped_curves(explained, td, groups=groups, ks=[0, 3, 25], n_random=2)
    scores = td["attribution", "value", "board"].abs().sum(1).reshape(4, 25)  # per square
    top = torch.argsort(scores, dim=-1, descending=True, stable=True)[:, :3]
    removed = torch.zeros(4, 25, dtype=torch.bool).scatter(-1, top, True).reshape(4, 1, 5, 5)
    slow = [
        module(TensorDict(board=b, batch_size=[4]))["win"].squeeze(-1)
        for b in (board, torch.where(removed, 0.0, board), torch.zeros_like(board))
    ]
    d = torch.stack([(v - slow[-1]).abs().mean() for v in slow])
    assert result.n_groups == 25
    assert torch.allclose(result.curve["value"], d / d[0], atol=1e-5)
    assert torch.allclose(result.fractions, torch.tensor([0.0, 0.12, 1.0]))


def test_all_layers_randomized_matches_the_last_cascading_step(mlp_case):
    _, explained, td = mlp_case("saliency", batch_shape=(7,))
    fast = randomized_network_correlation(explained, td, seed=3)
    slow = randomization_check(explained, td, seed=3)  # one step per layer
    for head, value in fast.items():
        assert torch.allclose(value, slow.correlation[head][-1], atol=1e-6, equal_nan=True)


def test_bad_groups_and_ks_are_clear_errors(mlp_case):
    _, explained, td = mlp_case("saliency")
    with pytest.raises(ValueError, match="groups has 3 labels but the attributed inputs have 9"):
        grouped_curves(explained, td, groups=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"every label 0\.\.G-1"):
        grouped_curves(explained, td, groups=torch.tensor([0, 2] * 4 + [0]))
    with pytest.raises(ValueError, match="ks must increase from 0 to the number of groups"):
        grouped_curves(explained, td, ks=[0, 3])
    with pytest.raises(ValueError, match="mode must be"):
        grouped_curves(explained, td, mode="both")
