"""The main job's report on the shipped double-pendulum agent tells the truth: rounding-level
attributions are not ranked, the probe headline is selectivity over a random network (not
decodability), saturated layers and the near-constant value head are named, the IG baseline
is stated in physical units, and unsigned maps are not captioned as signed."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.agents import load
from tdhook_rl.attribution import IntegratedGradients, Saliency, SmoothGrad
from tdhook_rl.attribution.noise import is_signed, rounding_level
from tdhook_rl.report.double_pendulum import explain_double_pendulum, summary_line
from tdhook_rl.report.options import ExplainOptions
from tdhook_rl.report.pendulum_attribution import UPRIGHT, ig_baseline
from tdhook_rl.report.pendulum_probes import selectivity_rows

SMALL = dict(steps=150, envs=4, n_steps=4, ablation=False)


@pytest.fixture(scope="module")
def agent():
    return load("double_pendulum")


def run(agent, tmp_path, **options):
    opts = ExplainOptions(**(SMALL | options))
    path, summary = explain_double_pendulum(agent, tmp_path / "report", opts, progress=False)
    return path, summary, (path / "report.html").read_text()


def test_rounding_level_attributions_are_not_ranked(agent, tmp_path):
    # saliency of the mode action's log-probability: the scale is state-independent, so the
    # gradient is float noise (~1e-8), which the report used to rank and share out
    path, summary, page = run(
        agent, tmp_path, method="saliency", policy_target="log_prob", probes=False
    )
    assert summary["attribution_rounding_level"] == {"policy": True, "value": False}
    assert summary["attribution_magnitude"]["policy"] < 1e-5
    assert "policy" not in summary["attribution_share"]
    assert "policy" not in summary["attribution_share_steady"]
    assert len(summary["attribution_share"]["value"]) == 9  # the value head is measured
    line = summary_line(path, summary)
    assert "policy attributions at rounding level (not ranked)" in line
    assert "rounding level of its output" in page
    # Saliency(abs=True) gives magnitudes: its maps are not captioned as signed
    assert "red raises" not in page and "magnitudes only" in page


def test_loc_target_is_ranked_with_transient_and_steady_shares(agent, tmp_path):
    path, summary, page = run(agent, tmp_path, probes=False)
    assert summary["policy_target"] == "loc"
    assert summary["attribution_rounding_level"] == {"policy": False, "value": False}
    for part in ("attribution_share", "attribution_share_transient", "attribution_share_steady"):
        for head in ("policy", "value"):
            assert abs(sum(summary[part][head].values()) - 1) < 1e-5
    # the transient (steps < 100) and the steady state (>= 100) are different views
    assert summary["attribution_share_transient"] != summary["attribution_share_steady"]
    # the baseline is stated in physical units: the upright equilibrium at rest
    physical = summary["ig_baseline"]["physical"]
    assert physical["cos_hinge1"] == 1.0 and physical["cart_velocity"] == 0.0
    assert "baseline (physical)" in page and "red raises" in page
    # IG's completeness from that baseline: a step's attributions sum to f(x) - f(b)
    assert summary["policy_max_abs_completeness_delta"] < 0.05
    assert "in the steady state" in summary_line(path, summary)


def test_ig_baseline_is_the_standardized_upright_state(agent):
    standardized, raw = ig_baseline("upright", agent.obs_norm)
    assert raw.tolist() == list(UPRIGHT)
    loc = torch.as_tensor(agent.obs_norm["loc"]).float()
    scale = torch.as_tensor(agent.obs_norm["scale"]).float()
    torch.testing.assert_close(standardized, ((raw - loc) / scale).clamp(-10, 10))
    zero, mean = ig_baseline("mean", agent.obs_norm)
    assert bool((zero == 0).all()) and torch.equal(mean, loc)
    with pytest.raises(ValueError, match="unknown IG baseline 'origin'"):
        ig_baseline("origin", agent.obs_norm)


def test_probe_headline_is_selectivity_and_saturated_layers_are_named(agent, tmp_path):
    path, summary, page = run(agent, tmp_path)
    assert summary["probe_splits"] == 4  # four episodes: each held out once
    rows = {(r["site"], r["label"]): r for r in summary["probes"]}
    for row in rows.values():
        assert row["splits"] == 4
        assert row["selectivity"] == pytest.approx(row["r2"] - row["control_r2"])
    # most labels are linear in the observation: marked, and the headline is not "R^2 1.00"
    assert rows["actor h1", "cart_position"]["in_observation"]
    assert summary["observation_probes"]["cart_position"] > 0.99
    assert not rows["actor h1", "tip_height"]["in_observation"]
    headline = summary["probe_headline"]
    assert "random network" in headline and headline in page
    line = summary_line(path, summary)
    assert "selective" in line and "best probe" not in line
    # the critic's second layer is saturated: named, and its probes do not explode
    health = summary["layer_health"]["critic h2"]
    assert health["saturated"] == health["units"] == 64
    assert "critic h2: 64 of 64 units saturated" in page
    for label in ("cart_position", "hinge1_angle", "hinge2_velocity"):
        assert rows["critic h2", label]["near_constant_units"] == 64
        assert rows["critic h2", label]["r2"] > -2  # was -387 to -10,132
    assert summary["layer_health"]["actor h1"]["saturated"] == 0
    low, high = summary["value_range"]["min"], summary["value_range"]["max"]
    assert 0 < high - low < 0.01 * abs(high)
    assert "nearly constant" in page


def test_ablations_state_n_and_offer_mean_and_per_unit(agent, tmp_path):
    path, summary, page = run(
        agent,
        tmp_path,
        probes=False,
        steps=20,
        episodes=3,
        groups=1,
        ablation=True,
        ablation_steps=10,
    )
    rows = summary["ablations"]
    assert [r["value"] for r in rows] == ["zero", "mean"] * 2  # one group per actor layer
    assert all(r["episodes"] == 3 for r in rows)
    assert "n = 3 paired episodes" in page
    assert "n = 3" in summary_line(path, summary)
    _, each, _ = run(
        agent,
        tmp_path / "each",
        probes=False,
        steps=20,
        episodes=2,
        ablation=True,
        ablation_steps=5,
        ablation_units="each",
        ablation_value="zero",
    )
    assert (
        len(each["ablations"]) == 128 and each["ablations"][0]["name"] == "actor h1 unit 0 (zero)"
    )


def test_rounding_level_on_the_gradient_of_a_mode_log_prob(agent):
    actor = agent.actor
    env = agent.make_env(2, seed=0)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        obs = env.rollout(8, actor)["observation"].reshape(16, 9)  # states the agent visits
    env.close()
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        td = actor(TensorDict(observation=obs, batch_size=[16]))
    x = obs.clone().requires_grad_(True)
    dist = actor.get_dist(TensorDict(observation=x, batch_size=[16]))
    log_prob = dist.log_prob(td["action"])
    (grad,) = torch.autograd.grad(log_prob.sum(), x)
    assert rounding_level(grad, log_prob.detach(), 1)
    x = obs.clone().requires_grad_(True)
    loc = actor.get_dist(TensorDict(observation=x, batch_size=[16])).loc
    (grad,) = torch.autograd.grad(loc.sum(), x)
    assert not rounding_level(grad, loc.detach(), 1)
    assert not rounding_level(torch.zeros(0, 9), torch.zeros(0), 1)


def test_signed_methods():
    assert not is_signed(Saliency())
    assert is_signed(Saliency(abs=False)) and is_signed(IntegratedGradients())
    assert not is_signed(SmoothGrad(kind="smoothgrad_sq"))
    assert is_signed(SmoothGrad()) and not is_signed(SmoothGrad(Saliency(abs=True)))


def test_selectivity_rows_without_control():
    rows = selectivity_rows([[{"site": "h", "label": "x", "r2": 0.5, "control_r2": None}]])
    assert "selectivity" not in rows[0] and rows[0]["r2"] == 0.5


def test_hidden_layers_are_found_by_identity_in_a_shared_trunk(agent):
    from tdhook_rl.agents.double_pendulum.model import (
        DoublePendulumAgent,
        build_shared_actor_critic,
    )
    from tdhook_rl.report.double_pendulum import hidden_layers

    avo = build_shared_actor_critic()
    shared = DoublePendulumAgent(
        avo.get_policy_operator(), avo.get_value_operator(), dict(agent.obs_norm)
    )
    layers = hidden_layers(shared)
    assert [layer.name for layer in layers] == ["shared h1", "shared h2"]  # heads are linear
    for layer in layers:  # the recorded and the ablated path name the same module object
        assert shared.actor_critic.get_submodule(layer.path) is shared.actor.get_submodule(
            layer.actor_path
        )
    separate = hidden_layers(agent)
    assert [layer.actor_path is None for layer in separate] == [False, False, True, True]
    for layer in separate[:2]:
        assert agent.actor_critic.get_submodule(layer.path) is agent.actor.get_submodule(
            layer.actor_path
        )
