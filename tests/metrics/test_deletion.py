"""Deletion and insertion curves against a slow loop over heads and k, and their bad inputs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdhook_rl.metrics import deletion_curve, insertion_curve

from models import OBS


def slow_curve(module, td, scores_per_head, ks, baseline, mode):
    """One forward per head and k, straight from the definition."""
    x = td["observation"]
    out = {}
    for head, scores in scores_per_head.items():
        order = torch.argsort(scores, dim=-1, descending=True, stable=True)
        rank = torch.argsort(order, dim=-1)
        rows = []
        for k in ks:
            top = rank < k
            value = (
                torch.where(top, baseline, x)
                if mode == "deletion"
                else torch.where(top, x, baseline)
            )
            res = module(TensorDict(observation=value, batch_size=td.batch_size))
            if head == "value":
                rows.append(res["state_value"][..., 0])
            else:
                rows.append(res["logits"][..., int(head[-1])])
        out[head] = torch.stack(rows)
    return out


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curves_match_a_slow_loop(batch_shape, mode, mlp_case, heads):
    module, explained, td = mlp_case("ig", batch_shape)
    fn = deletion_curve if mode == "deletion" else insertion_curve
    result = fn(explained, td, baseline=0.5, n_random=3, seed=7)
    ks = list(range(OBS + 1))
    assert result.ks.tolist() == ks
    assert torch.allclose(result.fractions, torch.arange(OBS + 1) / OBS)
    scores = {h: td["attribution", h, "observation"].abs() for h in heads}
    slow = slow_curve(module, td, scores, ks, 0.5, mode)
    gen = torch.Generator().manual_seed(7)
    random_ranks = torch.rand((3, *batch_shape, OBS), generator=gen).argsort(-1)
    for head in heads:
        assert result.values[head].shape == (OBS + 1, *batch_shape)
        torch.testing.assert_close(result.values[head], slow[head], atol=1e-5, rtol=1e-5)
        chance = torch.stack(
            [
                slow_curve(module, td, {head: -r.float()}, ks, 0.5, mode)[head]  # rank r first
                for r in random_ranks
            ]
        ).mean(0)
        torch.testing.assert_close(result.random[head], chance, atol=1e-5, rtol=1e-5)
        area = torch.trapezoid(slow[head], dx=1 / OBS, dim=0)
        torch.testing.assert_close(result.auc[head], area, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            result.random_auc[head], torch.trapezoid(chance, dx=1 / OBS, dim=0)
        )
    assert "seed=7" in result.perturbation


def test_deletion_ends_at_the_baseline_and_insertion_at_the_input(mlp_case):
    module, explained, td = mlp_case("saliency", (6,))
    deleted = deletion_curve(explained, td, ks=[0, OBS], heads="value")
    inserted = insertion_curve(explained, td, ks=[0, OBS], heads=["value"])
    base = module(TensorDict(observation=torch.zeros(6, OBS), batch_size=[6]))["state_value"]
    value = td["state_value"][..., 0]
    torch.testing.assert_close(deleted.values["value"][0], value)
    torch.testing.assert_close(deleted.values["value"][1], base[..., 0])
    torch.testing.assert_close(inserted.values["value"][0], base[..., 0])
    torch.testing.assert_close(inserted.values["value"][1], value)
    assert list(deleted.values) == ["value"]


def test_fractions_and_greedy_agreement(mlp_case, heads):
    module, explained, td = mlp_case("saliency", (4, 3))
    result = deletion_curve(explained, td, fractions=[0.0, 0.5, 1.0], agreement="logits")
    assert result.ks.tolist() == [0, 4, 9]  # round(4.5) is 4
    for head in heads:
        agree = result.agreement[head]
        assert agree.shape == (3, 4, 3)
        assert bool((agree[0] == 1).all())  # nothing removed: the same greedy action
        x = td["observation"]
        scores = td["attribution", head, "observation"].abs()
        rank = scores.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
        logits = module(TensorDict(observation=torch.where(rank < 4, 0.0, x), batch_size=[4, 3]))[
            "logits"
        ]
        expected = (logits.argmax(-1) == td["logits"].argmax(-1)).float()
        torch.testing.assert_close(agree[1], expected)
    assert result.random_agreement["value"].shape == (3, 4, 3)


def test_bad_inputs_are_clear_errors(mlp_case):
    _, explained, td = mlp_case("saliency", (5,))
    with pytest.raises(ValueError, match=r"k=10 is out of range: the inputs have 9 features"):
        deletion_curve(explained, td, ks=[0, 10])
    with pytest.raises(KeyError, match="head 'policy' is not a target"):
        deletion_curve(explained, td, heads="policy")
    missing = td.exclude(("attribution", "value", "observation"))
    with pytest.raises(KeyError, match="no attribution for head 'value'"):
        deletion_curve(explained, missing, heads="value")
    with pytest.raises(ValueError, match="does not match the inputs"):
        deletion_curve(explained, td, baseline=torch.zeros(4))
    wrong = td.clone()
    wrong["attribution", "value", "observation"] = torch.full((5, OBS), float("nan"))
    with pytest.raises(ValueError, match="'value' has non-finite values"):
        deletion_curve(explained, wrong, heads="value")
    with pytest.raises(ValueError, match="give ks or fractions, not both"):
        deletion_curve(explained, td, ks=[1], fractions=[0.1])
    with pytest.raises(KeyError, match="agreement key 'q' is not in the TensorDict"):
        deletion_curve(explained, td, agreement="q")
    with pytest.raises(TypeError, match="measure an Attributed wrapper"):
        deletion_curve(explained.wrapped, td)


def test_chunks_give_the_same_numbers(mlp_case):
    from tdhook_rl.metrics import infidelity, prediction_gap

    _, explained, td = mlp_case("saliency", (4, 3))
    whole = deletion_curve(explained, td, n_random=3)
    chunked = deletion_curve(explained, td, n_random=3, chunk_size=7)
    for head in whole.values:
        torch.testing.assert_close(chunked.values[head], whole.values[head])
        torch.testing.assert_close(chunked.random[head], whole.random[head])
    a, b = infidelity(explained, td), infidelity(explained, td, chunk_size=4)
    torch.testing.assert_close(a.infidelity["value"], b.infidelity["value"])
    a, b = prediction_gap(explained, td, 2), prediction_gap(explained, td, 2, chunk_size=5)
    torch.testing.assert_close(a.pgi["value"], b.pgi["value"])
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        deletion_curve(explained, td, chunk_size=0)
