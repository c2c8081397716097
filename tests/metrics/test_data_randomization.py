"""Data randomization on a case whose answer is known: a linear teacher. The student distilled
from the real targets has the teacher's weights, so its saliency is ``|w|`` at every state;
the student distilled from permuted targets has near-zero weights unrelated to ``w``."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from tdhook_rl.metrics.data_randomization import data_randomization_check, distil

W = torch.tensor([6.0, -5.0, 4.0, 3.5, -3.0, 2.5, 2.0, -1.5, 1.0, 0.5, 0.25, 0.1])


def linear_case(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, W.numel(), generator=g)
    return states, (states @ W)[:, None]


def test_the_distilled_student_recovers_the_teacher_and_the_permuted_one_does_not():
    states, targets = linear_case()
    result = data_randomization_check(
        lambda: torch.nn.Linear(W.numel(), 1),
        states,
        targets,
        "saliency",
        steps=600,
        lr=0.1,
        seed=0,
    )
    # the trained student is the teacher: its weights and its saliency |w| at every state
    assert torch.allclose(result.trained.weight[0], W, atol=1e-2)
    assert result.fit["y0"] > 0.999
    # the permuted student learned nothing about the inputs
    assert abs(result.fit_permuted["y0"]) < 0.2
    assert result.permuted.weight.abs().max() < 0.5 * W.abs().min() + 1.0
    # reference: scipy's Spearman between the two students' |gradients| (one per state)
    slow = spearmanr(
        result.trained.weight[0].abs().detach(), result.permuted.weight[0].abs().detach()
    )
    assert torch.allclose(
        result.correlation["y0"], torch.full((512,), float(slow.statistic)), atol=1e-5
    )
    assert result.mean()["y0"] < 0.5  # the maps differ: saliency passes the check here
    # and against the teacher: the trained student's map ranks features as |w| does
    teacher = spearmanr(result.trained.weight[0].abs().detach(), W.abs()).statistic
    assert teacher > 0.999


def test_a_nonlinear_student_per_state_maps_match_a_slow_loop():
    states, targets = linear_case(n=128, seed=1)
    targets = torch.cat([targets, states[:, :1].tanh()], -1)

    def make():
        return torch.nn.Sequential(
            torch.nn.Linear(W.numel(), 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        )

    result = data_randomization_check(
        make, states, targets, "saliency", heads=["a", "b"], steps=200
    )
    for i, head in enumerate(["a", "b"]):
        rows = []
        for s in range(0, 128, 17):  # slow: autograd per state and per student, scipy's rank
            grads = []
            for net in (result.trained, result.permuted):
                x = states[s].clone().requires_grad_(True)
                (g,) = torch.autograd.grad(net(x)[i], x)
                grads.append(g.abs())
            rows.append(spearmanr(grads[0], grads[1]).statistic)
        assert torch.allclose(
            result.correlation[head][::17], torch.tensor(rows, dtype=torch.float32), atol=1e-4
        )


def test_distil_starts_every_student_from_the_same_weights():
    x = torch.randn(32, 3)
    a = distil(lambda: torch.nn.Linear(3, 1), x, x[:, :1], steps=1, seed=3)
    b = distil(lambda: torch.nn.Linear(3, 1), x, x[:, :1], steps=1, seed=3)
    c = distil(lambda: torch.nn.Linear(3, 1), x, x[:, :1], steps=1, seed=4)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_bad_input_is_a_clear_error():
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match="targets have 5 rows but states have 8"):
        data_randomization_check(lambda: torch.nn.Linear(3, 1), x, torch.randn(5, 1), "saliency")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        distil(lambda: torch.nn.Linear(3, 1), x, torch.randn(8, 1), steps=0)
    with pytest.raises(ValueError, match="heads names 2 columns"):
        data_randomization_check(
            lambda: torch.nn.Linear(3, 1), x, torch.randn(8, 1), "saliency", heads=["a", "b"]
        )
