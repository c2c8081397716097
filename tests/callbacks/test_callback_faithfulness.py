"""``AttributionSpec(..., faithfulness="deletion")``: the callback logs, next to the shares, each
head's normalized deletion area and its chance level through a real CSV logger, the same
numbers as the metric computed by hand on the evaluation rollout."""

from __future__ import annotations

import math

import pytest
import torch

from tdhook_rl.attribution import InputXGradient, Saliency
from tdhook_rl.callbacks import AttributionSpec, InterpretabilityCallback, LogTo, Schedule
from tdhook_rl.callbacks.faithfulness import faithfulness_scalars
from tdhook_rl.metrics.trust import grouped_curves
from tdhook_rl.targets import ActionLoc, ActionLogProb

from models import PointMassEnv, gaussian_actor

NAMES = ["faithfulness/policy/deletion_auc", "faithfulness/policy/deletion_auc_random"]


def make_callback(tmp_path, **spec):
    torch.manual_seed(0)
    return InterpretabilityCallback(
        PointMassEnv(),
        gaussian_actor(action_dim=1),
        AttributionSpec({"policy": ActionLoc()}, method=InputXGradient(), **spec),
        schedule=Schedule(every_frames=1000, eval_steps=20, max_overhead=None),
        log=LogTo("csv", log_dir=tmp_path, figures_every=0),
    )


def read_csv(path):
    return [
        (int(s), float(v)) for s, v in (line.split(",") for line in path.read_text().splitlines())
    ]


def test_deletion_auc_is_logged_beside_the_shares(tmp_path):
    callback = make_callback(tmp_path, faithfulness="deletion")
    for frames in (1000, 2000):
        callback(frames)
    scalars = callback.history[-1]
    assert any(k.startswith("attribution/policy/") for k in scalars)  # the shares are there
    for name in NAMES:
        assert math.isfinite(scalars[name])
        expected = [(int(h["frames"]), h[name]) for h in callback.history]
        assert read_csv(tmp_path / "tdhook_rl" / "scalars" / f"{name}.csv") == expected
    # the same number as the metric on the last evaluation rollout, sampled the same way
    rollout = callback.last_rollout.reshape(-1)
    index = torch.linspace(0, rollout.shape[0] - 1, min(64, rollout.shape[0])).round().long()
    n = rollout["observation"].shape[-1]
    ks = sorted({round(i * n / 10) for i in range(11)})
    curves = grouped_curves(callback._attributed, rollout[index], ks=ks, n_random=4, chunk_size=16)
    assert scalars[NAMES[0]] == pytest.approx(float(curves.auc["policy"]), rel=1e-6)
    assert scalars[NAMES[1]] == pytest.approx(float(curves.random_auc["policy"]), rel=1e-6)


def test_off_by_default_and_a_bad_value_is_refused(tmp_path):
    callback = make_callback(tmp_path)
    assert not any(k.startswith("faithfulness/") for k in callback(1000))
    with pytest.raises(ValueError, match="faithfulness must be None or one of"):
        AttributionSpec({"policy": ActionLoc()}, faithfulness="insertion-ish")


def test_a_rounding_level_head_is_nan(tmp_path):
    # saliency of the shipped agent's mode log-probability: float noise, flagged, not measured
    from tdhook_rl import agents

    agent = agents.load("double_pendulum")
    callback = InterpretabilityCallback(
        agent.make_env(2, seed=0),
        agent.actor_critic,
        AttributionSpec(
            {"policy": ActionLogProb(), "value": "state_value"},
            method=Saliency(),
            faithfulness="deletion",
        ),
        schedule=Schedule(every_frames=100, eval_steps=20, max_overhead=None),
        log=LogTo(None, figures_every=0),
    )
    with pytest.warns(RuntimeWarning, match="rounding level"):
        scalars = callback(100)
    assert callback.rounding == {"policy"}
    assert math.isnan(scalars[NAMES[0]]) and math.isnan(scalars[NAMES[1]])
    value = scalars["faithfulness/value/deletion_auc"]
    assert math.isfinite(value) and value < scalars["faithfulness/value/deletion_auc_random"]
    direct = faithfulness_scalars(callback._attributed, callback.last_rollout, {"policy"})
    assert direct["faithfulness/value/deletion_auc"] == value
