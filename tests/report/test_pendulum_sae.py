"""The double-pendulum report's SAE section: its numbers equal a recomputation by hand (FVE,
top samples, attributions by removing the feature, steering by a direct Intervened call and by
the last layer's algebra), and the section is opt-in."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl.agents import load
from tdhook_rl.concepts import SAEFeature
from tdhook_rl.report.double_pendulum import explain_double_pendulum, hidden_layers
from tdhook_rl.report.options import ExplainOptions
from tdhook_rl.report.pendulum_attribution import policy_target
from tdhook_rl.report.pendulum_sae import sae_layer, sae_section, train_sae
from tdhook_rl.report.writer import ReportWriter


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    torch.manual_seed(0)
    agent = load("double_pendulum")
    layers = hidden_layers(agent)
    recorded = thr.Recorded(agent.actor_critic, {layer.name: layer.path for layer in layers})
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = agent.make_env(2, seed=0).rollout(150, recorded, break_when_any_done=False)
    report = ReportWriter(tmp_path_factory.mktemp("sae") / "report", "SAE section")
    summary: dict = {}
    opts = ExplainOptions(sae=True, sae_features=4, seed=0, episodes=3, ablation_steps=80)
    sae = sae_section(report, agent, rollout, layers, policy_target("loc")[0], summary, opts)
    path = report.publish(summary)
    return agent, layers, rollout, sae, summary, path


def test_reconstruction_numbers_equal_a_recomputation(section):
    _, layers, rollout, sae, summary, _ = section
    s = summary["sae"]
    assert s["layer"] == sae_layer(layers).name == "actor h2"
    x = rollout["activations", "actor h2"].reshape(-1, 64).double()
    with torch.no_grad():
        x_hat = sae(x.float()).double()
        f = sae.encode(x.float())
    fve = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert s["fve"] == pytest.approx(float(fve), rel=1e-9, abs=1e-9)
    assert s["dead_fraction"] == pytest.approx(float((f.amax(0) <= 0).double().mean()))
    assert s["l0"] == pytest.approx(float((f > 0).sum(-1).double().mean()))
    assert s["samples"] == 300 and s["n_features"] == 128 and s["k"] == 8
    assert 0.5 < s["fve"] <= 1.0  # a TopK SAE with 8 of 128 features fits this layer
    # the section's SAE is reproducible from the seed alone
    again = train_sae(rollout["activations", "actor h2"].reshape(-1, 64), seed=0)
    for name, value in sae.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)


def test_shown_features_and_their_top_states(section):
    agent, _, rollout, sae, summary, _ = section
    rows = summary["sae"]["features"]
    assert len(rows) == 4
    flat = rollout.reshape(-1)
    x = flat["activations", "actor h2"]
    states = flat.select("observation")
    site = "module.0.module.0.3"  # the actor's second Tanh (before the Linear giving loc)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        f = sae.encode(x)
        clean = agent.actor(states.clone())["loc"].squeeze(-1)
        removed = {}
        for j in range(sae.n_features):  # every feature, removed by clamping it to 0
            if bool((f[:, j] > 0).any()):
                out = thr.Intervened(agent.actor, {site: SAEFeature(sae, j, value=0.0)})(
                    states.clone()
                )
                removed[j] = (clean - out["loc"].squeeze(-1)).abs().mean().item()
    # loc is linear in h2, so the first-order attribution is the exact removal effect
    want = sorted(removed, key=removed.get, reverse=True)[:4]
    assert [r["feature"] for r in rows] == want
    for r in rows:
        j = r["feature"]
        assert r["policy_attribution_abs"] == pytest.approx(removed[j], rel=1e-4, abs=1e-7)
        assert r["value_attribution_abs"] == 0.0  # the critic does not read the actor's h2
        values, index = f[:, j].topk(6)
        assert r["top_indices"] == torch.where(values > 0, index, -1).tolist()
        assert r["max_value"] == pytest.approx(float(values[0]))
        assert r["frequency"] == pytest.approx(float((f[:, j] > 0).double().mean()))


def test_steering_effect_equals_a_direct_intervened_call(section):
    agent, _, rollout, sae, summary, _ = section
    states = rollout.reshape(-1).select("observation")
    site = "module.0.module.0.3"
    last = agent.actor.module[0].module[0][4]  # Linear(64, 1): loc = W h2 + b
    for r in summary["sae"]["features"]:
        j, alpha = r["feature"], r["steering_alpha"]
        assert alpha == pytest.approx(r["max_value"] * float(sae.input_scale))
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            clean = agent.actor(states.clone())
            steered = thr.Intervened(agent.actor, {site: SAEFeature(sae, j, alpha=alpha)})(
                states.clone()
            )
            direct = (steered["action"] - clean["action"]).abs().mean().item()
            # independently of Intervened: the action is tanh(loc), loc moves by alpha W d_j
            shift = alpha * (last.weight @ sae.decoder[:, j]).item()
            algebra = (torch.tanh(clean["loc"] + shift) - clean["action"]).abs().mean().item()
        assert r["steering_mean_abs_delta_action"] == pytest.approx(direct, rel=1e-6)
        assert direct == pytest.approx(algebra, rel=1e-4, abs=1e-6)
        assert direct > 0


def test_closed_loop_steering_return_equals_paired_rollouts_by_hand(section):
    """The return change of steering for whole episodes: rollouts from the same seed with
    and without the steering, each copy's reward summed up to its first done."""
    agent, _, _, sae, summary, _ = section
    site = "module.0.module.0.3"

    def returns(policy) -> torch.Tensor:
        env = agent.make_env(3, seed=0)
        env.set_seed(0)
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            rollout = env.rollout(80, policy, break_when_any_done=False)
        env.close()
        reward = rollout["next", "reward"].squeeze(-1)
        done = rollout["next", "done"].squeeze(-1).long()
        before_first_done = (done.cumsum(-1) - done) == 0
        return (reward * before_first_done).sum(-1)

    clean = returns(agent.actor)
    changed = []
    for r in summary["sae"]["features"][:2]:
        steer = SAEFeature(sae, r["feature"], alpha=r["steering_alpha"])
        steered = returns(thr.Intervened(agent.actor, {site: steer}))
        got = r["steering_return"]
        # the upright pendulum earns ~9.36 per step either way: steering moves the return by
        # ~1e-3 here, so the comparison is absolute (float32 sums: ~2e-5 apart)
        assert got["clean"] == pytest.approx(float(clean.mean()), rel=0, abs=1e-4)
        assert got["intervened"] == pytest.approx(float(steered.mean()), rel=0, abs=1e-4)
        assert got["change"] == pytest.approx(float((steered - clean).mean()), rel=0, abs=1e-4)
        assert got["low"] <= got["change"] <= got["high"]
        changed.append(bool((steered != clean).any()))
    assert any(changed)  # the steering reached the episodes


def test_section_is_written(section):
    *_, path = section
    page = (path / "report.html").read_text()
    assert "Sparse autoencoder features of actor h2" in page
    assert "fraction of variance explained" in page and "mean |delta action|" in page
    assert (path / "sae_examples.png").stat().st_size > 0
    assert (path / "sae_histograms.png").stat().st_size > 0


def test_sae_is_opt_in(tmp_path):
    assert ExplainOptions().sae is False
    field = next(f for f in dataclasses.fields(ExplainOptions) if f.name == "sae")
    assert field.default is False
    with pytest.raises(ValueError, match="--sae-features must be >= 1"):
        ExplainOptions(sae_features=0)
    agent = load("double_pendulum")
    small = dict(steps=40, envs=2, n_steps=2, ablation=False, probes=False, trust=False)
    _, off = explain_double_pendulum(agent, tmp_path / "off", ExplainOptions(**small),
                                     progress=False)  # fmt: skip
    assert "sae" not in off
    assert "Sparse autoencoder" not in (tmp_path / "off" / "report.html").read_text()
    path, on = explain_double_pendulum(
        agent, tmp_path / "on", ExplainOptions(**small, sae=True, sae_features=2), progress=False
    )
    assert len(on["sae"]["features"]) == 2 and on["sae"]["samples"] == 80
    assert "Sparse autoencoder features of actor h2" in (path / "report.html").read_text()


def test_no_actor_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a hidden layer of the actor"):
        sae_layer([])
