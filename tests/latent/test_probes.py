"""Probes: ridge and logistic against slow references, episode splits without leakage,
streaming from a memmap replay buffer, and the errors users meet."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.data import LazyMemmapStorage, ReplayBuffer

import tdhook_rl as thr
from tdhook_rl.latent.splits import StreamingEpisodeIds, hashed_unit
from tdhook_rl.probes import (
    LogisticProbe,
    RidgeProbe,
    episode_ids,
    episode_split,
    fit_probes,
    labels_from,
    randomized_copy,
)
from tdhook_rl.targets import Index

torch.set_num_threads(1)


def rollout(n_envs: int = 3, steps: int = 40, hidden: int = 6, p_done: float = 0.1):
    """An ``env.rollout``-shaped TensorDict ``[n_envs, T]`` (time last, named) with activations
    and a label that is a known linear function of them."""
    h = torch.randn(n_envs, steps, hidden)
    obs = torch.cat(
        [h[..., :2] @ torch.tensor([[1.0], [-2.0]]) + 0.5, torch.randn(n_envs, steps, 2)], -1
    )
    done = torch.rand(n_envs, steps, 1) < p_done
    return TensorDict(
        {
            "observation": obs,
            ("activations", "trunk"): h,
            ("activations", "head"): torch.tanh(h[..., :3]),
            ("next", "done"): done,
            ("next", "reward"): torch.randn(n_envs, steps, 1),
            ("sim", "qpos"): torch.stack([h[..., 0], h[..., 1] * 3.0], -1),
        },
        batch_size=[n_envs, steps],
        names=[None, "time"],
    )


def ridge_reference(x, y, alpha):
    """Explicitly standardized data, augmented system ``[Z; sqrt(alpha) I] beta = [Yc; 0]``."""
    x, y = x.double().numpy(), y.double().numpy().reshape(len(x), -1)
    mean, sd = x.mean(0), x.std(0)  # population sd
    keep = sd > 0
    z = (x[:, keep] - mean[keep]) / sd[keep]
    a = np.vstack([z, np.sqrt(alpha) * np.eye(z.shape[1])])
    b = np.vstack([y - y.mean(0), np.zeros((z.shape[1], y.shape[1]))])
    beta = np.linalg.lstsq(a, b, rcond=None)[0]
    w = np.zeros((x.shape[1], y.shape[1]))
    w[keep] = beta / sd[keep, None]
    return w, y.mean(0) - mean @ w


# --- ridge ------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 50.0])
@pytest.mark.parametrize("label_shape", [(), (3,)], ids=["1d", "2d"])
def test_ridge_matches_the_augmented_lstsq_reference(alpha, label_shape):
    x = torch.randn(80, 5) * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0]) + 4.0
    x[:, 3] = 2.5  # constant: dropped, weight 0
    y = torch.randn(80, *label_shape) + (x[:, :1] if label_shape else x[:, 0])
    probe = RidgeProbe(alpha).fit(x, y)
    w, b = ridge_reference(x, y, alpha)
    torch.testing.assert_close(probe.weight, torch.from_numpy(w), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(probe.bias, torch.from_numpy(b), rtol=1e-8, atol=1e-10)
    assert probe.predict(x).shape == y.shape
    pred = x.double().numpy() @ w + b
    yy = y.double().numpy().reshape(80, -1)
    r2 = 1 - ((yy - pred) ** 2).sum(0) / ((yy - yy.mean(0)) ** 2).sum(0)  # sklearn r2_score
    torch.testing.assert_close(probe.score(x, y), torch.from_numpy(r2).reshape(label_shape))


def test_ridge_recovers_a_linear_function_and_not_noise():
    x = torch.randn(3000, 16)
    y = torch.stack([x @ torch.randn(16) + 3.0, torch.randn(3000)], -1)
    probe = RidgeProbe().fit(x[:2000], y[:2000])
    r2 = probe.score(x[2000:], y[2000:])
    assert r2[0] > 0.99
    assert -0.05 < r2[1] < 0.05


def test_constant_features_do_not_blow_up():
    x = torch.cat([torch.randn(50, 2), torch.full((50, 1), 7.0), torch.zeros(50, 1)], -1)
    probe = RidgeProbe(alpha=0.0).fit(x, x[:, 0])
    assert torch.isfinite(probe.weight).all()
    assert probe.weight[2:].abs().max() == 0
    assert probe.score(x, x[:, 0]) > 0.999


def saturated_rollout(seed: int = 0) -> TensorDict:
    """Two episodes of 8 saturated tanh units (std ~1e-5 around 0.99998) whose tiny wiggles
    drift from one episode to the next, and 2 live units carrying half of the label."""
    g = torch.Generator().manual_seed(seed)
    steps = 300
    label = torch.randn(2, steps, generator=g)
    drift = torch.tensor([0.0, 2e-4]).view(2, 1, 1)  # the held-out episode drifts off
    dead = 0.99998 + 1e-5 * torch.randn(2, steps, 8, generator=g) + drift
    dead = dead + 1e-6 * label.unsqueeze(-1)  # a faint echo of the label in the dead units
    live = torch.stack([label, torch.randn(2, steps, generator=g)], -1)
    done = torch.zeros(2, steps, 1, dtype=torch.bool)
    done[:, -1] = True
    return TensorDict(
        {
            ("activations", "h"): torch.cat([dead, live], -1),
            ("activations", "dead"): dead,
            ("next", "done"): done,
            "y": label + 0.5 * torch.randn(2, steps, generator=g),
        },
        [2, steps],
    )


def test_near_constant_units_are_dropped_not_blown_up_on_held_out_episodes():
    td = saturated_rollout()
    # the bug: standardized to unit variance, the dead units' drift explodes held-out R^2
    exploded = fit_probes(td, ["dead"], {"y": "y"}, held_out=0.5, probe_options={"min_std": 0})
    assert exploded.rows[0]["r2"] < -10 and exploded.rows[0]["near_constant_units"] == 0
    rows = {r["site"]: r for r in fit_probes(td, None, {"y": "y"}, held_out=0.5).rows}
    assert rows["dead"]["near_constant_units"] == 8 and rows["dead"]["units"] == 8
    assert -0.5 < rows["dead"]["r2"] <= 0.0  # nothing decodable: the train mean, no explosion
    assert rows["h"]["near_constant_units"] == 8 and rows["h"]["units"] == 10
    assert rows["h"]["r2"] > 0.7  # the live units still decode the label
    probe = RidgeProbe().fit(td["activations", "h"][0], td["y"][0])
    assert probe.near_constant == 8 and bool((probe.weight[:8] == 0).all())
    with pytest.raises(ValueError, match="min_std must be a finite number >= 0"):
        RidgeProbe(min_std=-1.0)


def test_fit_batches_from_a_memmap_replay_buffer_equals_in_memory_fitting(tmp_path):
    td = rollout(n_envs=4, steps=50).reshape(-1)
    rb = ReplayBuffer(storage=LazyMemmapStorage(200, scratch_dir=tmp_path))
    rb.extend(td)
    batches = (
        (b["activations", "trunk"], b["sim", "qpos"])
        for b in (rb[i : i + 32] for i in range(0, len(rb), 32))
    )
    streamed = RidgeProbe(alpha=2.0).fit_batches(batches)
    x, y = td["activations", "trunk"], td["sim", "qpos"] + 0.1 * torch.randn(200, 2)
    full = RidgeProbe(alpha=2.0).fit(x, td["sim", "qpos"])
    torch.testing.assert_close(streamed.weight, full.weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed.bias, full.bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed.score(x, y), full.score(x, y), rtol=1e-5, atol=1e-5)


# --- logistic ---------------------------------------------------------------------------


def penalized_loss_gradient(probe: LogisticProbe, x, y):
    """The gradient of mean cross-entropy + l2/2 ||W||^2, written out with numpy."""
    z = (x.numpy() - probe.feature_mean.numpy()) / probe.feature_scale.numpy()
    w, b = probe.weight.double().numpy(), probe.bias.double().numpy()
    logits = z @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    err = p - np.eye(w.shape[1])[y.numpy()]
    return z.T @ err / len(z) + probe.l2 * w, err.mean(0)


def test_logistic_solution_has_zero_gradient_and_matches_softmax():
    x = torch.randn(300, 4, dtype=torch.float64) * 3 + 1
    y = ((x[:, 0] - x[:, 1] + torch.randn(300, dtype=torch.float64)).clamp(-3, 2.99) + 3).long()
    probe = LogisticProbe(l2=1e-2, max_iter=500).fit(x, y)
    gw, gb = penalized_loss_gradient(probe, x, y)
    assert np.abs(gw).max() < 1e-6 and np.abs(gb).max() < 1e-6
    z = (x - probe.feature_mean) / probe.feature_scale
    torch.testing.assert_close(
        probe.predict_proba(x), torch.softmax(z @ probe.weight + probe.bias, -1)
    )


def test_logistic_separable_data_and_noise():
    x = torch.randn(1200, 8)
    y = (x @ torch.randn(8, 3)).argmax(-1)  # 3 linearly separable classes
    probe = LogisticProbe().fit(x[:900], y[:900])
    assert probe.score(x[900:], y[900:])["accuracy"] > 0.95
    noise = torch.randint(0, 2, (1200,))
    score = LogisticProbe().fit(x[:900], noise[:900]).score(x[900:], noise[900:])
    assert abs(score["balanced_accuracy"] - 0.5) < 0.1


def test_balanced_accuracy_is_mean_recall_over_present_classes():
    probe = LogisticProbe().fit(
        torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1])
    )
    x, y = torch.tensor([[0.0], [0.1], [0.2], [3.0]]), torch.tensor([0, 0, 1, 1])
    score = probe.score(x, y)  # predictions 0, 0, 0, 1
    assert float(score["accuracy"]) == pytest.approx(0.75)
    assert float(score["balanced_accuracy"]) == pytest.approx((1.0 + 0.5) / 2)


def test_logistic_fit_batches_approaches_the_lbfgs_optimum():
    x = torch.randn(800, 5)
    y = x[:, 0] + 0.5 * torch.randn(800) > 0
    full = LogisticProbe(l2=1e-2).fit(x, y)
    streamed = LogisticProbe(l2=1e-2, epochs=30).fit_batches(
        [(x[i : i + 100], y[i : i + 100]) for i in range(0, 800, 100)]
    )
    assert abs(float(full.score(x, y)["accuracy"]) - float(streamed.score(x, y)["accuracy"])) < 0.03
    torch.testing.assert_close(streamed.predict_proba(x), full.predict_proba(x), atol=0.05, rtol=0)
    with pytest.raises(TypeError, match="several passes"):
        LogisticProbe().fit_batches((x, y) for _ in range(2))


# --- episodes and labels ----------------------------------------------------------------


def assert_no_leakage(ids, train, test):
    assert not set(ids[train].tolist()) & set(ids[test].tolist())
    assert bool((train ^ test).all())
    assert test.any() and train.any()


def test_episode_ids_from_done_are_unique_across_env_copies():
    done = torch.zeros(3, 5, 1, dtype=torch.bool)
    done[0, 1] = done[2, 3] = True
    td = TensorDict({("next", "done"): done}, batch_size=[3, 5], names=[None, "time"])
    assert episode_ids(td).tolist() == [[0, 0, 1, 1, 1], [2, 2, 2, 2, 2], [3, 3, 3, 3, 4]]
    time_major = TensorDict({("next", "done"): done.transpose(0, 1)}, [5, 3], names=["time", None])
    assert torch.equal(episode_ids(time_major), episode_ids(td).T)


@pytest.mark.parametrize("layout", ["rollout", "collector_flat", "collector_2d"])
def test_episode_split_never_splits_an_episode(layout):
    td = rollout(n_envs=4, steps=30, p_done=0.15)
    if layout != "rollout":  # collector batches carry traj ids (unique across envs)
        ids = episode_ids(td) + 100
        td["collector", "traj_ids"] = ids
        td = td.reshape(-1) if layout == "collector_flat" else td
        td.names = None if layout == "collector_flat" else td.names
    ids = episode_ids(td)
    train, test = episode_split(td, held_out=0.25, seed=3)
    assert train.shape == td.batch_size
    assert_no_leakage(ids, train, test)
    assert len(ids[test].unique()) == round(0.25 * len(ids.unique()))
    again = episode_split(td, held_out=0.25, seed=3)[1]
    assert torch.equal(again, test)
    assert not torch.equal(episode_split(td, held_out=0.25, seed=4)[1], test)


def test_streaming_episode_ids_match_the_whole_stream():
    td = rollout(n_envs=1, steps=100, p_done=0.1).reshape(-1)
    ids_of = StreamingEpisodeIds()
    streamed = torch.cat([ids_of(td[i : i + 7]) for i in range(0, 100, 7)])
    assert torch.equal(streamed, episode_ids(td))


def test_labels_from_keys_columns_and_callables():
    td = rollout()
    labels = labels_from(
        td,
        {
            "x": ("observation", 0),
            "qvel": (("sim", "qpos"), 1),
            "q0": Index(("sim", "qpos"), 0),
            "reward": ("next", "reward"),
            "done": ("next", "done"),
            "norm": lambda t: t["observation"].norm(dim=-1),
        },
    )
    assert labels.batch_size == td.batch_size
    torch.testing.assert_close(labels["x"], td["observation"][..., 0])
    torch.testing.assert_close(labels["qvel"], td["sim", "qpos"][..., 1])
    torch.testing.assert_close(labels["q0"], td["sim", "qpos"][..., 0])
    torch.testing.assert_close(labels["reward"], td["next", "reward"].squeeze(-1))
    assert labels["done"].dtype == torch.bool and labels["done"].shape == td.batch_size


# --- fit_probes -------------------------------------------------------------------------


def test_fit_probes_on_a_rollout_with_control(tmp_path):
    td = rollout(n_envs=4, steps=40)
    control = td.clone()
    control["activations", "trunk"] = torch.randn(4, 40, 6)
    control["activations", "head"] = torch.randn(4, 40, 3)
    spec = {"x": ("observation", 0), "noise": ("observation", 2)}
    res = fit_probes(td, ["trunk"], spec, held_out=0.25, control=control)
    rows = {r["label"]: r for r in res.rows}
    assert rows["x"]["r2"] > 0.99 and rows["x"]["control_r2"] < 0.2
    assert rows["noise"]["r2"] < 0.2
    train, test = episode_split(td, 0.25, 0)
    x, y = td["activations", "trunk"], td["observation"][..., 0]
    probe = RidgeProbe().fit(x[train], y[train])
    assert rows["x"]["r2"] == pytest.approx(float(probe.score(x[test], y[test])), abs=1e-10)
    assert (rows["x"]["n_train"], rows["x"]["n_test"]) == (int(train.sum()), int(test.sum()))
    torch.testing.assert_close(res.probes["trunk", "x"].weight[:, 0], probe.weight[:, 0])
    assert "control_r2" in str(res) and "trunk" in str(res)
    assert res.to_tensordict()["trunk", "x", "r2"] == pytest.approx(rows["x"]["r2"])
    res.to_json(tmp_path / "probes.json")
    assert json.loads((tmp_path / "probes.json").read_text())[0]["site"] == "trunk"
    chunked = fit_probes(td, None, spec, held_out=0.25, batch_size=17)
    assert {r["site"] for r in chunked.rows} == {"trunk", "head"}
    trunk_x = next(r for r in chunked.rows if (r["site"], r["label"]) == ("trunk", "x"))
    assert trunk_x["r2"] == pytest.approx(rows["x"]["r2"], abs=1e-8)


def test_fit_probes_streams_a_memmap_buffer_with_a_hashed_episode_split(tmp_path):
    td = rollout(n_envs=1, steps=600, p_done=0.05).reshape(-1)
    rb = ReplayBuffer(storage=LazyMemmapStorage(600, scratch_dir=tmp_path))
    rb.extend(td)
    res = fit_probes(rb, ["trunk"], {"x": ("observation", 0)}, held_out=0.3, seed=1, batch_size=64)
    test = hashed_unit(episode_ids(td), 1) < 0.3
    ids = episode_ids(td)
    assert_no_leakage(ids, ~test, test)
    x, y = td["activations", "trunk"], td["observation"][..., 0]
    want = RidgeProbe().fit(x[~test], y[~test]).score(x[test], y[test])
    assert res.rows[0]["r2"] == pytest.approx(float(want), abs=1e-8)
    assert res.rows[0]["n_test"] == int(test.sum())


def test_fit_probes_logistic_in_memory_and_streamed(tmp_path):
    td = rollout(n_envs=4, steps=100)
    spec = {"up": lambda t: t["observation"][..., 0] > 0.5}  # linear in the trunk: separable
    res = fit_probes(td, ["trunk"], spec, kind="logistic")
    assert res.rows[0]["accuracy"] > 0.9 and res.rows[0]["balanced_accuracy"] > 0.9
    rb = ReplayBuffer(storage=LazyMemmapStorage(400, scratch_dir=tmp_path))
    rb.extend(td.reshape(-1))
    res = fit_probes(rb, ["trunk"], spec, kind="logistic", batch_size=40)  # 10 epochs of Adam
    assert res.rows[0]["accuracy"] > 0.9 and res.rows[0]["balanced_accuracy"] > 0.9
    with torch.inference_mode():  # as inside a collector or an evaluation loop
        res = fit_probes(td, ["trunk"], spec, kind="logistic")
    assert res.rows[0]["accuracy"] > 0.9


def test_randomized_copy_is_seeded_and_leaves_the_original_alone():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    policy = TensorDictModule(net, ["observation"], ["action"])
    before = [p.clone() for p in net.parameters()]
    state = torch.get_rng_state()
    a, b = randomized_copy(policy, seed=1), randomized_copy(policy, seed=1)
    assert not torch.equal(randomized_copy(policy, seed=2).module[0].weight, a.module[0].weight)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.module[0].weight, net[0].weight)
    out = thr.Recorded(a, {"h": "module.1"})(
        TensorDict(observation=torch.randn(3, 4), batch_size=[3])
    )
    assert out["activations", "h"].shape == (3, 8)
    scaled = torch.nn.Module()
    scaled.lin, scaled.log_std = torch.nn.Linear(2, 2), torch.nn.Parameter(torch.zeros(2))
    with pytest.warns(UserWarning, match=r"\['log_std'\]"):
        randomized_copy(scaled)


# --- errors -----------------------------------------------------------------------------


def test_missing_site_lists_the_recorded_ones():
    with pytest.raises(
        KeyError, match=r"site 'trnk' is not recorded.*recorded sites: \['head', 'trunk'\]"
    ):
        fit_probes(rollout(), ["trnk"], {"x": ("observation", 0)})
    with pytest.raises(KeyError, match=r"no activations under \('acts',\)"):
        fit_probes(rollout(), None, {"x": ("observation", 0)}, activation_key="acts")
    packed = rollout().set("activations", torch.zeros(3, 40, 5))
    with pytest.raises(TypeError, match=r"packed into one tensor.*recorded\.unpack\(data\)"):
        fit_probes(packed, None, {"x": ("observation", 0)})


def test_mismatched_batch_shapes():
    with pytest.raises(ValueError, match="mismatched batch shapes"):
        RidgeProbe().fit(torch.randn(10, 3), torch.randn(12))
    with pytest.raises(ValueError, match=r"label 'y' \(the given tensor\).*batch shape \(3, 40\)"):
        fit_probes(rollout(), None, {"y": torch.randn(3, 41)})
    with pytest.raises(ValueError, match=r"label 'obs'.*pick one column with \(key, index\)"):
        labels_from(rollout(), {"obs": "observation"})


def test_nan_labels():
    td = rollout()
    td["sim", "qpos"][0, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"label 'q' has 1 NaN"):
        fit_probes(td, None, {"q": (("sim", "qpos"), 0)})
    with pytest.raises(ValueError, match="labels contain 1 NaN"):
        RidgeProbe().fit(torch.randn(3, 2), torch.tensor([1.0, float("nan"), 0.0]))


def test_constant_labels():
    with pytest.raises(ValueError, match=r"label 'c' is constant.*R\^2 is undefined"):
        fit_probes(rollout(), None, {"c": lambda t: torch.ones(t.shape)})
    with pytest.raises(ValueError, match=r"column 0 is constant.*R\^2 is undefined"):
        RidgeProbe().fit(torch.randn(5, 2), torch.randn(5)).score(torch.randn(5, 2), torch.ones(5))
    with pytest.raises(ValueError, match=r"label 'c' is constant \(a single class\)"):
        fit_probes(
            rollout(),
            None,
            {"c": lambda t: torch.zeros(t.shape, dtype=torch.long)},
            kind="logistic",
        )
    with pytest.raises(TypeError, match=r"label 'r' is torch.float32.*kind='ridge'"):
        fit_probes(rollout(), None, {"r": ("next", "reward")}, kind="logistic")


@pytest.mark.parametrize("held_out", [0.0, 1.0, -0.1, 1.5])
def test_held_out_outside_the_unit_interval(held_out):
    with pytest.raises(ValueError, match=r"held_out .* must lie in \(0, 1\)"):
        episode_split(rollout(), held_out)
    with pytest.raises(ValueError, match=r"held_out .* must lie in \(0, 1\)"):
        fit_probes(rollout(), None, {"x": ("observation", 0)}, held_out=held_out)


def test_fewer_than_two_episodes():
    td = rollout(n_envs=1, p_done=0.0)
    with pytest.raises(
        ValueError, match=r"at least 2 episodes, found 1 \(counted from \('next', 'done'\)\)"
    ):
        episode_split(td)
    with pytest.raises(KeyError, match=r"need \('collector', 'traj_ids'\) or \('next', 'done'\)"):
        episode_ids(td.exclude(("next", "done")))


def test_bad_kind_and_options():
    with pytest.raises(ValueError, match="kind must be 'ridge' or 'logistic'"):
        fit_probes(rollout(), None, {"x": ("observation", 0)}, kind="lasso")
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        fit_probes(rollout(), None, {"x": ("observation", 0)}, probe_options={"alpha": -1})
    with pytest.raises(IndexError, match=r"label 'x': index \(9,\) is out of range"):
        labels_from(rollout(), {"x": ("observation", 9)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RidgeProbe(alpha=0).fit(torch.randn(4, 6), torch.randn(4))  # collinear: pinv fallback
