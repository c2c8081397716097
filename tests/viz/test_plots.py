"""Plots render from real results, label what they show, and refuse bad input clearly."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl import viz
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.targets import ActionLogProb

from models import OBS, shared_trunk_actor_critic

NAMES = [f"f{i}" for i in range(OBS)]


@pytest.fixture
def rollout():
    explained = thr.Attributed(
        shared_trunk_actor_critic(),
        IntegratedGradients(n_steps=8),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "value": "state_value"},
    )
    return explained(TensorDict(observation=torch.randn(30, OBS), batch_size=[30]))


def test_attribution_over_time_has_one_panel_per_head_on_one_centred_scale(rollout, tmp_path):
    fig = viz.attribution_over_time(rollout, feature_names=NAMES)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("head:")]
    assert [ax.get_title() for ax in panels] == ["head: policy", "head: value"]
    limits = {ax.images[0].get_clim() for ax in panels}
    assert len(limits) == 1 and sum(next(iter(limits))) == 0  # shared, centred at zero
    assert [t.get_text() for t in panels[0].get_yticklabels()] == NAMES
    fig.savefig(tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_attribution_over_time_per_head_scales(rollout):
    fig = viz.attribution_over_time(rollout, shared_scale=False)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("head:")]
    limits = [ax.images[0].get_clim() for ax in panels]
    assert limits[0] != limits[1] and all(lo == -hi for lo, hi in limits)
    for ax, head in zip(panels, ("policy", "value"), strict=True):
        a = rollout["attribution", head, "observation"].abs()
        assert abs(limits[panels.index(ax)][1] - float(torch.quantile(a.flatten(), 0.99))) < 1e-6


def test_feature_shares_sum_to_100_per_head(rollout):
    fig = viz.feature_shares(rollout, feature_names=NAMES)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 2 * OBS
    assert abs(sum(heights[:OBS]) - 100) < 1e-3 and abs(sum(heights[OBS:]) - 100) < 1e-3


def test_probe_and_effect_plots():
    rows = [
        {"site": s, "label": lab, "score": 0.5, "control_score": 0.1}
        for s in ("h1", "h2")
        for lab in ("angle", "velocity")
    ]
    fig = viz.probe_scores(rows)
    assert len(fig.axes[0].lines) >= 4
    effects = {
        "ablate 0-7": {"change": -10.0, "low": -15.0, "high": -5.0},
        "ablate 8-15": {"change": 1.0, "low": -2.0, "high": 3.0},
    }
    fig = viz.intervention_effects(effects)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(effects)


def test_bad_input(rollout):
    with pytest.raises(ValueError, match="one trajectory"):
        viz.attribution_over_time(rollout.expand(2, 30))
    with pytest.raises(KeyError, match="heads present"):
        viz.feature_shares(rollout, heads=["moves"])
    with pytest.raises(ValueError, match="feature names"):
        viz.feature_shares(rollout, feature_names=["a"])
