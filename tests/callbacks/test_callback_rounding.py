"""Rounding noise is not presented as attribution: on the shipped double-pendulum agent,
evaluated with deterministic actions as the callback always does, the gradient of the mode's
log-probability is zero up to rounding (its scale does not depend on the state). The callback
flags that head (``attribution/<head>/rounding_level = 1``, one warning naming ``ActionLoc``)
and logs no shares for it; explaining the distribution's location gives real shares."""

from __future__ import annotations

import warnings

import pytest

from tdhook_rl import agents
from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import AttributionSpec, InterpretabilityCallback, LogTo, Schedule
from tdhook_rl.envs.double_pendulum import FEATURE_NAMES
from tdhook_rl.targets import ActionLoc, ActionLogProb


@pytest.fixture(scope="module")
def agent():
    return agents.load("double_pendulum")


def callback(agent, policy_target, tmp_path):
    return InterpretabilityCallback(
        agent.make_env(2, seed=0),
        agent.actor_critic,
        AttributionSpec(
            {"policy": policy_target, "value": "state_value"},
            method=Saliency(),
            feature_names=FEATURE_NAMES,
        ),
        schedule=Schedule(every_frames=100, eval_steps=20, max_overhead=None),
        log=LogTo("csv", log_dir=tmp_path, figures_every=1),
    )


def test_action_log_prob_at_the_mode_is_flagged_and_not_ranked(agent, tmp_path):
    cb = callback(agent, ActionLogProb(), tmp_path)
    with pytest.warns(
        RuntimeWarning,
        match=r"head 'policy' \(ActionLogProb\('action'\)\) has attributions at the float "
        r"rounding level of its output.*feature shares are not logged \(attribution/policy/"
        r"rounding_level = 1\).*explain the distribution's location instead, targets=\{\.\.\., "
        r"'policy': ActionLoc\(\)\}",
    ):
        scalars = cb(100)
    assert scalars["attribution/policy/rounding_level"] == 1.0
    assert not [k for k in scalars if k.startswith("attribution/policy/") and "rounding" not in k]
    assert scalars["attribution/value/rounding_level"] == 0.0
    value = [scalars[f"attribution/value/{f}"] for f in FEATURE_NAMES]
    assert sum(value) == pytest.approx(1.0, abs=1e-5)
    assert cb.rounding == {"policy"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not at every evaluation
        again = cb(200)
    assert again["attribution/policy/rounding_level"] == 1.0
    scalars_dir = tmp_path / "tdhook_rl" / "scalars" / "attribution"
    assert (scalars_dir / "policy" / "rounding_level.csv").read_text().split() == [
        "100,1.0",
        "200,1.0",
    ]
    assert not (scalars_dir / "policy" / "cart_position.csv").exists()
    hparams = (tmp_path / "tdhook_rl" / "texts" / "hparams0.txt").read_text()
    assert "attribution/policy/target: ActionLogProb('action')" in hparams
    assert "attribution/value/target: Key('state_value')" in hparams


def test_the_distributions_location_gives_shares(agent, tmp_path):
    cb = callback(agent, ActionLoc(), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        scalars = cb(100)
    assert scalars["attribution/policy/rounding_level"] == 0.0
    shares = [scalars[f"attribution/policy/{f}"] for f in FEATURE_NAMES]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert max(shares) < 1.0
    assert cb.heads["policy"] == "ActionLoc('loc')"
    hparams = (tmp_path / "tdhook_rl" / "texts" / "hparams0.txt").read_text()
    assert "attribution/policy/target: ActionLoc('loc')" in hparams
