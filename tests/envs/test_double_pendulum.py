"""The InvertedDoublePendulum-v5 reference env: specs, standardization, simulator state."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import check_env_specs

from tdhook_rl.envs.double_pendulum import (
    FEATURE_NAMES,
    QPOS_NAMES,
    QVEL_NAMES,
    make_double_pendulum,
)

POLE = 0.6  # length of each pole in Gymnasium's inverted_double_pendulum.xml


def fake_norm(clip: float | None = 5.0) -> dict:
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(9, generator=gen) * 0.1
    scale = torch.rand(9, generator=gen) + 0.05
    return {"loc": loc, "scale": scale, "clip": clip}


@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("normalized", [False, True])
def test_check_env_specs(num_envs, normalized):
    env = make_double_pendulum(num_envs, obs_norm=fake_norm() if normalized else None)
    check_env_specs(env, seed=0)
    assert env.observation_spec["observation"].dtype == torch.float32
    assert env.observation_spec["observation"].shape[-1] == len(FEATURE_NAMES)


@pytest.mark.parametrize("clip", [None, 5.0])
def test_observation_standardized(clip):
    norm = fake_norm(clip)
    env = make_double_pendulum(obs_norm=norm, seed=0)
    td = env.rollout(30, break_when_any_done=False)
    want = (td["raw_observation"] - norm["loc"]) / norm["scale"]
    if clip is not None:
        want = want.clamp(-clip, clip)
    torch.testing.assert_close(td["observation"], want)
    assert "raw_observation" not in make_double_pendulum().observation_spec.keys()


def test_simulator_state_matches_observation():
    env = make_double_pendulum(obs_norm=fake_norm(None), seed=0)
    td = env.rollout(60, break_when_any_done=False)
    for step in (td, td["next"]):
        obs, qpos, qvel = step["raw_observation"], step["qpos"], step["qvel"]
        assert qpos.shape[-1] == len(QPOS_NAMES) and qvel.shape[-1] == len(QVEL_NAMES)
        torch.testing.assert_close(obs[..., 0], qpos[..., 0])  # cart position
        torch.testing.assert_close(obs[..., 1:3], qpos[..., 1:].sin())
        torch.testing.assert_close(obs[..., 3:5], qpos[..., 1:].cos())
        torch.testing.assert_close(obs[..., 5:8], qvel.clamp(-10, 10))
        # the tip of pole 2: two poles of 0.6 m, hinge 2 relative to pole 1. MuJoCo's site
        # position (what Gymnasium's reward and termination read) is computed before the
        # last integration substep, so it lags qpos slightly
        angle1, angle2 = qpos[..., 1], qpos[..., 1] + qpos[..., 2]
        height = POLE * (angle1.cos() + angle2.cos())
        torch.testing.assert_close(step["tip_height"].squeeze(-1), height, atol=1e-3, rtol=0)
    # Gymnasium terminates exactly when the tip is at 1 m or lower
    terminated = td["next", "terminated"].squeeze(-1)
    assert terminated.any()
    assert torch.equal(terminated, td["next", "tip_height"].squeeze(-1) <= 1)


def test_batched_env_resets_copies_separately():
    env = make_double_pendulum(4, seed=0)
    assert env.batch_size == (4,)
    td = env.rollout(40, break_when_any_done=False)
    assert td.batch_size == (4, 40)  # (envs, time)
    for key, size in (("observation", 9), ("qpos", 3), ("qvel", 3), ("tip_height", 1)):
        assert td[key].shape == (4, 40, size)
    # random actions fall within 40 steps; each copy restarts at step 0 after its own done
    done = td["next", "done"].squeeze(-1)
    assert done.any(-1).all()
    env_i, t = done.nonzero()[0]
    assert td["step_count"][env_i, t + 1].item() == 0
    assert (td["step_count"][:, 0] == 0).all()


def test_seeded_env_is_reproducible():
    def rollout(seed):
        torch.manual_seed(0)
        return make_double_pendulum(2, seed=seed).rollout(20, break_when_any_done=False)

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert torch.equal(a["qpos"], b["qpos"])
    assert not torch.equal(a["qpos"], c["qpos"])


def test_without_simulator_state():
    env = make_double_pendulum(simulator_state=False)
    assert set(env.observation_spec.keys()) == {"observation", "step_count"}
    check_env_specs(env, seed=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        make_double_pendulum(0)
    with pytest.raises(KeyError, match=r"obs_norm misses \['scale'\]"):
        make_double_pendulum(obs_norm={"loc": torch.zeros(9)})
    with pytest.raises(ValueError, match=r"must have shape \(9,\)"):
        make_double_pendulum(obs_norm={"loc": torch.zeros(8), "scale": torch.ones(8)})
    with pytest.raises(ValueError, match="positive"):
        make_double_pendulum(obs_norm={"loc": torch.zeros(9), "scale": torch.zeros(9)})


def test_another_device_is_reached_by_a_final_device_cast():
    """Gymnasium stays on the CPU; a last DeviceCastTransform moves the data (a GymWrapper on
    CUDA fails at partial resets, and TransformedEnv would keep the normalization buffers on
    the base env's device). ``meta`` stands in for a GPU: only the structure is checked here;
    tests/gpu runs it on CUDA."""
    from torchrl.envs import DeviceCastTransform, ObservationNorm

    norm = {"loc": torch.zeros(9), "scale": torch.ones(9), "clip": None}
    env = make_double_pendulum(2, obs_norm=norm, device="meta")
    assert env.base_env.device == torch.device("cpu")
    assert isinstance(env.transform[-1], DeviceCastTransform)
    assert env.transform[-1].device == torch.device("meta")
    (obs_norm,) = [t for t in env.transform if isinstance(t, ObservationNorm)]
    assert obs_norm.loc.device == torch.device("cpu")
    plain = make_double_pendulum(2, obs_norm=norm)
    assert not any(isinstance(t, DeviceCastTransform) for t in plain.transform)
