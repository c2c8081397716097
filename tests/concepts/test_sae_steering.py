"""Steering the shipped double-pendulum actor through an SAE feature, and feature dashboards."""

from __future__ import annotations

import pytest
import torch
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.concepts import (
    SAEFeature,
    SAETrainer,
    SparseAutoencoder,
    feature_attributions,
    feature_dashboard,
)
from tdhook_rl.evaluate import intervention_effect

H2 = "module.0.module.0.3"  # the actor's second Tanh, followed by the Linear that gives loc


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    agent = agents.load("double_pendulum")
    recorded = thr.Recorded(agent.actor, {"h2": H2})
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = agent.make_env(4, seed=0).rollout(100, recorded, break_when_any_done=False)
    sae = SparseAutoencoder(64, 128, kind="topk", k=8, seed=0)
    SAETrainer(sae, lr=3e-3, progress=False).fit(
        rollout, ("activations", "h2"), batch_size=100, steps=150
    )
    return agent, rollout, sae


def test_training_from_a_packed_buffer_equals_training_from_the_rollout():
    agent = agents.load("double_pendulum")
    packed = thr.Recorded(agent.actor, {"h1": "module.0.module.0.1", "h2": H2}, packed=True)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = agent.make_env(2, seed=1).rollout(50, packed, break_when_any_done=False)
    flat = packed.unpack(rollout).reshape(-1)
    stored = ReplayBuffer(storage=LazyTensorStorage(100), transform=packed.unpack)
    stored.extend(rollout.reshape(-1).exclude("next"))  # stored packed, read per site
    key = ("activations", "h2")
    saes = []
    for data in (flat, stored):
        sae = SparseAutoencoder(64, 96, kind="topk", k=4, seed=0)
        SAETrainer(sae, progress=False).fit(data, key, batch_size=32, epochs=3, shuffle=False)
        saes.append(sae)
    for name, value in saes[0].state_dict().items():
        torch.testing.assert_close(saes[1].state_dict()[name], value, rtol=0, atol=0)


def test_adding_a_feature_moves_loc_by_the_last_layer_along_its_direction(trained):
    agent, rollout, sae = trained
    td = rollout[0, :8].select("observation").clone()
    feature, alpha = 5, 0.5
    clean = agent.actor(td.clone())
    steered = thr.Intervened(agent.actor, {H2: SAEFeature(sae, feature, alpha=alpha)})(td.clone())
    last = agent.actor.module[0].module[0][4]  # Linear(64, 1)
    want = alpha * last.weight @ sae.decoder[:, feature].detach()
    torch.testing.assert_close(steered["loc"] - clean["loc"], want.expand(8, 1))


def test_clamping_a_feature_sets_its_value_and_keeps_the_reconstruction_error(trained):
    _, rollout, sae = trained
    a = rollout["activations", "h2"][0, :16]
    out = SAEFeature(sae, 7, value=2.5)(a, None, "h2")
    with torch.no_grad():
        f, f_out = sae.encode(a), sae.encode(out)
        # the change is the decoded change of feature 7 alone: a - x_hat(f) + x_hat(f')
        f_set = f.clone()
        f_set[:, 7] = 2.5
        want = a - sae.decode(f) + sae.decode(f_set)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    if sae.kind == "relu":  # with TopK the feature may fall out of the k largest
        torch.testing.assert_close(f_out[:, 7], torch.full((16,), 2.5), atol=1e-3, rtol=1e-3)


def test_steering_changes_actions_and_returns(trained):
    agent, rollout, sae = trained
    last = agent.actor.module[0].module[0][4]
    # the feature whose direction pushes loc hardest, and a strong push along it
    push = (last.weight @ sae.decoder.detach()).squeeze(0)  # (F,)
    feature = int(push.abs().argmax())
    alpha = 3.0 * float(push[feature].sign().detach())
    steer = {H2: SAEFeature(sae, feature, alpha=alpha)}
    # open loop, on the recorded states: every action moves up (tanh(loc) is monotone)
    states = rollout.select("observation").reshape(-1)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        clean = agent.actor(states.clone())["action"]
        steered = thr.Intervened(agent.actor, steer)(states.clone())["action"]
    assert bool((steered > clean).all())
    # closed loop: the push topples the pendulum (the controller's feedback then fights it, so
    # the mean action need not go up); a zero push changes nothing
    env = agent.make_env(1, seed=0)
    effect = intervention_effect(env, agent.actor, steer, episodes=2, max_steps=30)
    assert effect.summary["returns"]["high"] < 0, str(effect)
    assert effect.summary["action_std"]["change"] > 0, str(effect)
    noop = {H2: SAEFeature(sae, feature, alpha=0.0)}
    unchanged = intervention_effect(env, agent.actor, noop, episodes=2, max_steps=30)
    assert unchanged.summary["returns"]["change"] == 0.0
    assert unchanged.summary["action_mean"]["change"] == 0.0


def test_steering_errors(trained):
    _, _, sae = trained
    with pytest.raises(IndexError, match=r"feature must be an index in \[0, 128\)"):
        SAEFeature(sae, 128, alpha=1.0)
    with pytest.raises(ValueError, match="exactly one of alpha"):
        SAEFeature(sae, 0, alpha=1.0, value=2.0)
    with pytest.raises(ValueError, match="the SAE reads activations of width 64"):
        SAEFeature(sae, 0, alpha=1.0)(torch.zeros(2, 32), None, "h")


def test_dashboard_matches_a_slow_computation(trained):
    _, rollout, sae = trained
    board = feature_dashboard(
        sae, rollout, ("activations", "h2"), features=[0, 5, 9], top=4, bins=6, batch_size=64
    )
    with torch.no_grad():
        f = sae.encode(rollout["activations", "h2"].reshape(-1, 64))[:, [0, 5, 9]]  # (400, 3)
    assert board.n == 400
    for row in range(3):
        col = f[:, row]
        values, index = col.topk(4)
        fired = values > 0
        torch.testing.assert_close(board.top_values[row], values)
        assert torch.equal(board.top_indices[row][fired], index[fired])
        assert bool((board.top_indices[row][~fired] == -1).all())
        assert board.frequency[row] == pytest.approx(float((col > 0).float().mean()))
        assert int(board.histogram[row].sum()) == int((col > 0).sum())
        if fired.any():
            want = torch.histc(col[col > 0], bins=6, min=0, max=float(values[0]))
            assert torch.equal(board.histogram[row], want.long())
    assert set(board.to_dict()) >= {"top_indices", "histogram", "bin_edges"}
    with pytest.raises(IndexError, match="out of range for an SAE of 128"):
        feature_dashboard(sae, rollout, ("activations", "h2"), features=[200])


def test_feature_attributions_are_exact_before_the_linear_output(trained):
    agent, rollout, sae = trained
    td = rollout[:, :5].select("observation").clone()  # (4, 5) time-major
    heads = {"loc": "loc", "loc^2": lambda t: t["loc"] ** 2}
    attr = feature_attributions(agent.actor, td, H2, sae, heads)
    assert attr.shape == (2, 4, 5, 128)
    clean = agent.actor(td.clone())["loc"].squeeze(-1)
    with torch.no_grad():
        f = sae.encode(thr.get(agent.actor, td, H2))
    for j in f.reshape(-1, 128).sum(0).nonzero().squeeze(1)[:6].tolist():
        removed = thr.Intervened(agent.actor, {H2: SAEFeature(sae, j, value=0.0)})(td.clone())
        # loc is linear in H2: removing the feature changes loc by minus its attribution
        torch.testing.assert_close(clean - removed["loc"].squeeze(-1), attr[0, ..., j])
        # loc^2 is not: its attribution is the first-order term 2 loc * (loc attribution)
        torch.testing.assert_close(attr[1, ..., j], 2 * clean * attr[0, ..., j])


def test_dashboard_figure(trained, tmp_path):
    from tdhook_rl.concepts.plots import plot_feature_dashboard

    _, rollout, sae = trained
    board = feature_dashboard(sae, rollout, ("activations", "h2"), features=[0, 1, 2, 3])
    fig = plot_feature_dashboard(board, path=tmp_path / "board.png")
    assert (tmp_path / "board.png").stat().st_size > 1000
    assert len(fig.axes) >= 4
