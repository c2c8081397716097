"""The report's "Which attributions to trust" section: its numbers are the metrics' own, a
method that is exact for a linear head beats chance there, the section can be turned off, and
a head at rounding level is not measured."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.agents import load
from tdhook_rl.metrics.trust import grouped_curves
from tdhook_rl.report.double_pendulum import explain_double_pendulum
from tdhook_rl.report.options import ExplainOptions
from tdhook_rl.report.pendulum_trust import trust_methods, trust_rows

SMALL = dict(steps=40, envs=2, n_steps=4, ablation=False, probes=False)


@pytest.fixture(scope="module")
def agent():
    return load("double_pendulum")


def test_linear_head_known_truth_and_the_rows_are_the_metrics_own():
    torch.manual_seed(0)
    linear = torch.nn.Linear(9, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.linspace(3.0, 0.0, 9)[None])
    module = TensorDictModule(linear, ["observation"], ["state_value"])
    batch = TensorDict(observation=torch.randn(32, 9), batch_size=[32])
    targets = {"value": "state_value"}
    methods = trust_methods(thr.attribution.InputXGradient(), "input_x_gradient")
    rows, curves = trust_rows(module, targets, batch, methods)
    by_method = {r["method"]: r for r in rows}
    exact = by_method["input_x_gradient (this report)"]
    # input x gradient is the exact contribution of each feature to a linear head: it beats
    # random orderings; the gradient (|w| = w here) predicts every perturbation exactly
    assert exact["deletion"] < 0.8 * exact["deletion_random"]
    saliency = by_method["saliency"]
    assert saliency["infidelity"] < 1e-8 < saliency["infidelity_random"]
    # the saliency of a linear model is |w| at every state: after re-initialization the map
    # is the new |w|, a different ranking
    assert abs(saliency["rho"]) < 0.9
    # the same number as the metric itself, recomputed here
    explained = thr.Attributed(module, "input_x_gradient", inputs=["observation"], targets=targets)
    again = grouped_curves(explained, explained(batch.clone()), n_random=16)
    assert exact["deletion"] == pytest.approx(float(again.auc["value"]))
    assert curves[("input_x_gradient (this report)", "value")] == again.curve["value"].tolist()


def test_the_section_is_in_the_report_and_can_be_turned_off(agent, tmp_path):
    opts = ExplainOptions(**SMALL, method="saliency")
    path, summary = explain_double_pendulum(agent, tmp_path / "on", opts, progress=False)
    page = (path / "report.html").read_text()
    assert "Which attributions to trust" in page and (path / "deletion_curves.png").exists()
    rows = summary["trust"]["rows"]
    assert {r["head"] for r in rows} == {"policy", "value"}
    assert [r["method"] for r in rows][::2] == list(trust_methods(None, "saliency"))  # type: ignore[arg-type]
    assert all(0 <= r["deletion_random"] for r in rows)
    off = ExplainOptions(**SMALL, method="saliency", trust=False)
    path, summary = explain_double_pendulum(agent, tmp_path / "off", off, progress=False)
    assert "trust" not in summary
    assert "Which attributions to trust" not in (path / "report.html").read_text()


def test_a_rounding_level_head_is_not_measured(agent, tmp_path):
    opts = ExplainOptions(**SMALL, method="saliency", policy_target="log_prob")
    _, summary = explain_double_pendulum(agent, tmp_path / "r", opts, progress=False)
    assert summary["trust"]["skipped"] == ["policy"]
    assert {r["head"] for r in summary["trust"]["rows"]} == {"value"}
