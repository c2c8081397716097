"""The callback with hidden sites among its inputs (issue 16, item 5): each site is logged
per unit as ``attribution/<head>/<site>/unit_<i>``, the share of the head's mean |attribution|
to that layer, written through a real CSV logger, and checked against captum's
``LayerIntegratedGradients`` on the evaluation rollout's observations."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from tensordict import TensorDict

from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.callbacks import AttributionSpec, InterpretabilityCallback, LogTo, Schedule
from tdhook_rl.targets import ActionLoc

from models import OBS, PointMassEnv, shared_trunk_actor_critic

TRUNK = "module.0.module.1"  # the shared trunk's Tanh: 32 units read by both heads
HEADS = {"policy": ActionLoc(), "value": "state_value"}
N_STEPS = 8


def make_callback(tmp_path, inputs=("observation", TRUNK), **spec):
    return InterpretabilityCallback(
        PointMassEnv((2,)),
        shared_trunk_actor_critic(),
        AttributionSpec(HEADS, inputs=inputs, method=IntegratedGradients(n_steps=N_STEPS), **spec),
        schedule=Schedule(every_frames=100, eval_steps=12, max_overhead=None),
        log=LogTo("csv", log_dir=tmp_path, figures_every=1),
    )


def read_csv(path):
    return [
        (int(step), float(value))
        for step, value in (line.split(",") for line in path.read_text().splitlines())
    ]


def captum_value_shares(rollout) -> torch.Tensor:
    """Each trunk unit's share of the value head's mean |layer IG|, from captum."""
    module = shared_trunk_actor_critic()
    obs = rollout["observation"].reshape(-1, OBS)

    def value(x: torch.Tensor) -> torch.Tensor:
        return module(TensorDict(observation=x, batch_size=x.shape[:1]))["state_value"]

    ig = LayerIntegratedGradients(value, module.get_submodule(TRUNK)).attribute(
        obs, n_steps=N_STEPS, method="gausslegendre"
    )
    magnitude = ig.abs().mean(0)
    return magnitude / magnitude.sum()


def test_each_unit_share_is_logged_per_head_and_matches_captum(tmp_path):
    callback = make_callback(tmp_path)
    scalars = callback(100)
    site = f"attribution/value/{TRUNK}"
    units = {int(k.rsplit("_", 1)[1]): v for k, v in scalars.items() if k.startswith(site + "/")}
    assert sorted(units) == list(range(32))
    want = captum_value_shares(callback.last_rollout)
    got = torch.tensor([units[i] for i in range(32)], dtype=want.dtype)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for head in HEADS:  # every head: 32 shares summing to 1, beside the input's features
        shares = [v for k, v in scalars.items() if k.startswith(f"attribution/{head}/{TRUNK}/")]
        assert len(shares) == 32 and sum(shares) == pytest.approx(1.0, abs=1e-5)
        features = [f"attribution/{head}/f{i}" for i in range(OBS)]
        assert sum(scalars[f] for f in features) == pytest.approx(1.0, abs=1e-5)
    # the policy head's shares are those of its own attributions in the rollout
    a = callback.last_rollout["attribution", "policy", TRUNK].reshape(-1, 32).abs().mean(0)
    policy = [scalars[f"attribution/policy/{TRUNK}/unit_{i}"] for i in range(32)]
    torch.testing.assert_close(torch.tensor(policy), (a / a.sum()).float(), atol=1e-6, rtol=1e-5)
    # the same numbers went through the CSV logger, at the step of the evaluation
    callback(200)
    folder = tmp_path / "tdhook_rl" / "scalars"
    for i in (0, 17, 31):
        name = f"{site}/unit_{i}"
        assert read_csv(folder / f"{name}.csv") == [
            (int(h["frames"]), h[name]) for h in callback.history
        ]
    hparams = (tmp_path / "tdhook_rl" / "texts" / "hparams0.txt").read_text()
    assert f"attribution/sites: {TRUNK}" in hparams
    # the unit-by-step figure of the site, beside the usual ones
    assert (tmp_path / "figures" / f"units_{TRUNK}_000000100.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "attribution_over_time_000000100.png").exists()


def test_top_units_logs_the_largest_and_the_rest(tmp_path):
    callback = make_callback(tmp_path, top_units=3)
    scalars = callback(100)
    every = make_callback(tmp_path / "all")(100)
    for head in HEADS:
        prefix = f"attribution/{head}/{TRUNK}/"
        kept = {k[len(prefix) :]: v for k, v in scalars.items() if k.startswith(prefix)}
        full = {k[len(prefix) :]: v for k, v in every.items() if k.startswith(prefix)}
        largest = sorted(full, key=lambda name: -full[name])[:3]
        assert sorted(kept) == sorted([*largest, "other"])
        for name in largest:
            assert kept[name] == pytest.approx(full[name], abs=1e-6)
        assert kept["other"] == pytest.approx(1.0 - sum(full[n] for n in largest), abs=1e-5)


def test_a_site_alone_is_logged_per_unit_and_drawn(tmp_path):
    callback = make_callback(tmp_path, inputs=[TRUNK])
    scalars = callback(100)
    assert not any(k.startswith("attribution/value/f") for k in scalars)  # no input features
    shares = [v for k, v in scalars.items() if k.startswith(f"attribution/value/{TRUNK}/")]
    assert len(shares) == 32 and sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert scalars["attribution/value/rounding_level"] == 0.0
    assert (tmp_path / "figures" / "attribution_over_time_000000100.png").exists()


def test_bad_site_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="top_units must be None or an int >= 1, got 0"):
        AttributionSpec(HEADS, inputs=["observation", TRUNK], top_units=0)
    with pytest.raises(ValueError, match=r"InterpretabilityCallback: input 'module\.7'"):
        make_callback(tmp_path, inputs=["observation", "module.7"])
