"""Probe R^2 logged by the callback equals a closed-form ridge fitted the slow way (numpy
least squares on the augmented system) on the same episode-wise split of the same rollout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import (
    AttributionSpec,
    InterpretabilityCallback,
    LogTo,
    ProbeSpec,
    Schedule,
)
from tdhook_rl.latent.splits import episode_split
from tdhook_rl.targets import ActionLogProb

from models import PointMassEnv, gaussian_actor

SITES = {"h1": "module.0.module.0.1", "h2": "module.0.module.0.3"}
LABELS = {
    "x": ("observation", 0),
    "v": ("observation", 1),
    "x_squared": lambda td: td["observation"][..., 0] ** 2,
}
ALPHA = 3.0


PROBES = ProbeSpec(SITES, LABELS, held_out=0.25, alpha=ALPHA, seed=3)


def make_callback(tmp_path, env=None, eval_steps=30, probes=PROBES, logger="csv"):
    env = env if env is not None else PointMassEnv(batch_size=(4,))
    return InterpretabilityCallback(
        env,
        gaussian_actor(action_dim=1),
        AttributionSpec({"policy": ActionLogProb()}, method=Saliency(abs=False)),
        # exact firing frames: no time-based deferral
        schedule=Schedule(every_frames=1000, eval_steps=eval_steps, max_overhead=None),
        probes=probes,
        log=LogTo(logger, log_dir=tmp_path, figures_every=0),
    )


def slow_ridge_r2(x, y, train, test, alpha):
    """sklearn's ``Ridge(alpha)`` on ``StandardScaler`` features, by least squares on
    ``[Z; sqrt(alpha) I] beta = [y - mean(y); 0]``, scored by R^2 on the test rows."""
    x_tr, y_tr = x[train], y[train]
    mu, sd = x_tr.mean(0), x_tr.std(0)  # population std, as StandardScaler
    z = (x_tr - mu) / sd
    d = x.shape[1]
    a = np.vstack([z, np.sqrt(alpha) * np.eye(d)])
    b = np.concatenate([y_tr - y_tr.mean(), np.zeros(d)])
    beta = np.linalg.lstsq(a, b, rcond=None)[0]
    pred = (x[test] - mu) / sd @ beta + y_tr.mean()
    return 1 - ((y[test] - pred) ** 2).sum() / ((y[test] - y[test].mean()) ** 2).sum()


def episodes_by_hand(done):
    """(envs, T) done flags -> episode ids: a new episode after every done, per env row."""
    ids, next_id = np.zeros(done.shape, dtype=int), 0
    for row in range(done.shape[0]):
        for t in range(done.shape[1]):
            ids[row, t] = next_id
            if done[row, t]:
                next_id += 1
        next_id += 1
    return ids


def test_logged_r2_equals_a_slow_closed_form_ridge_on_the_same_split(tmp_path):
    callback = make_callback(tmp_path)
    actor = callback.module
    fired, expected = [], {}
    for frames in (0, 500, 999, 1000, 1500, 2100, 2500, 3000):
        scalars = callback(frames)
        if scalars is None:
            continue
        fired.append(frames)
        rollout = callback.last_rollout  # [4 envs, 30 steps]
        assert rollout.shape == (4, 30)
        # the activations are the real forward's (not an attribution pass's)
        obs = rollout["observation"]
        net = actor.module[0].module[0]  # the MLP: Linear, Tanh, Linear, Tanh, Linear
        torch.testing.assert_close(rollout["activations", "h1"], net[:2](obs))
        torch.testing.assert_close(rollout["activations", "h2"], net[:4](obs))
        # the split keeps episodes whole
        train, test = (m.reshape(-1).numpy() for m in episode_split(rollout, 0.25, seed=3))
        ids = episodes_by_hand(rollout["next", "done"].squeeze(-1).numpy()).reshape(-1)
        assert train.any() and test.any() and not (train & test).any()
        assert not set(ids[train]) & set(ids[test])
        for site in SITES:
            x = rollout["activations", site].reshape(120, -1).double().numpy()
            for label, column in LABELS.items():
                if callable(column):
                    y = column(rollout)
                else:
                    y = rollout[column[0]][..., column[1]]
                y = y.reshape(-1).double().numpy()
                r2 = slow_ridge_r2(x, y, train, test, ALPHA)
                assert scalars[f"probe/{site}/{label}/r2"] == pytest.approx(r2, rel=1e-6, abs=1e-9)
                expected.setdefault((site, label), []).append((frames, r2))
    assert fired == [1000, 2100, 3000]
    for (site, label), values in expected.items():
        csv = tmp_path / "tdhook_rl" / "scalars" / "probe" / site / label / "r2.csv"
        rows = [line.split(",") for line in csv.read_text().splitlines()]
        assert [int(step) for step, _ in rows] == fired
        logged = [float(v) for _, v in rows]
        assert logged == pytest.approx([r2 for _, r2 in values], rel=1e-6, abs=1e-9)
    assert callback.last_probes is not None and len(callback.last_probes.rows) == 6


def test_a_rollout_with_one_episode_skips_the_probes_with_a_warning(tmp_path):
    callback = make_callback(tmp_path, env=PointMassEnv(), eval_steps=3, logger=None)
    with pytest.warns(RuntimeWarning, match="at least 2 episodes"):
        scalars = callback(1000)
    assert "eval/return" in scalars
    assert not any(k.startswith("probe/") for k in scalars)
    assert callback.last_probes is None


def test_probe_config_errors_are_raised_at_construction(tmp_path):
    with pytest.raises(ValueError, match="nearest valid sites"):
        make_callback(tmp_path, probes=ProbeSpec({"h": "module.0.module.0.9"}, LABELS))
    with pytest.raises(
        ValueError,
        match=r"labels do not match the rollout: label 'cart' reads key 'qpos', which is "
        r"missing; the TensorDict holds \[.*'observation'",
    ):
        make_callback(tmp_path, probes=ProbeSpec(SITES, {"cart": ("qpos", 0)}))
    with pytest.raises(ValueError, match="index \\(99,\\) is out of range"):
        make_callback(tmp_path, probes=ProbeSpec(SITES, {"x": ("observation", 99)}))
    with pytest.raises(TypeError, match="probes must be a ProbeSpec, got dict"):
        make_callback(tmp_path, probes={"x": ("observation", 0)})
    with pytest.raises(TypeError, match="is a tensor"):
        ProbeSpec(SITES, {"x": torch.zeros(3)})
    with pytest.raises(ValueError, match="held_out"):
        ProbeSpec(SITES, LABELS, held_out=1.0)
    with pytest.raises(ValueError, match="sites is empty"):
        ProbeSpec({}, LABELS)


def test_labels_are_checked_against_what_the_policy_writes_and_the_env_gives(tmp_path):
    # a rollout holds the policy's own outputs (the loc) and the next step's entries: both
    # are labels, checked on the dry call's output, not on the env's specs alone
    labels = {"loc": ("loc", 0), "reward": ("next", "reward"), "x": lambda td: td["nope"]}
    callback = make_callback(tmp_path, probes=ProbeSpec(SITES, labels), logger=None)
    assert callback.probes.labels == labels  # a callable is not called before a rollout
    with pytest.raises(
        TypeError, match=r"label 'x' is ActionLogProb\(\), which reads the module; a label is"
    ):
        ProbeSpec(SITES, {"x": ActionLogProb()})
    with pytest.raises(ValueError, match=r"label 'y' reads key \('next', 'qpos'\), which is"):
        make_callback(tmp_path, probes=ProbeSpec(SITES, {"y": (("next", "qpos"), 0)}))
