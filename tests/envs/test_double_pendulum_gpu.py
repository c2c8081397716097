"""InvertedDoublePendulumEnv (tdhook_rl.envs.double_pendulum_gpu) against Gymnasium's v5.

The ``mujoco`` backend (MuJoCo's C bindings, any mujoco version) checks the task logic
(observation, reward, termination, reset) against Gymnasium everywhere. The ``mujoco-torch``
tests (batched physics, the vmap fix) need the ``gpu`` extra (mujoco-torch 0.2.0 with
mujoco 3.6/3.7) and are skipped otherwise.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from tdhook_rl.envs.double_pendulum_gpu import (
    FEATURE_NAMES,
    InvertedDoublePendulumEnv,
    patch_mujoco_torch_while_loop,
)


def _mujoco_torch_missing() -> str | None:
    try:
        import mujoco_torch  # noqa: F401
    except Exception as err:  # ImportError, or AttributeError for a mismatched mujoco
        return f"mujoco-torch is not usable here ({type(err).__name__}: {err}); pip install .[gpu]"
    return None


_MISSING = _mujoco_torch_missing()
needs_mujoco_torch = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


def _initial_states(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting states near upright, within Gymnasium's reset range, away from the rail ends."""
    g = torch.Generator().manual_seed(0)
    qpos = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.2
    qvel = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.1
    return qpos, qvel


def _gymnasium_rollout(qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor):
    """Observations ``(T, 9)``, rewards ``(T,)``, terminations ``(T,)`` of Gymnasium's v5."""
    env = gym.make("InvertedDoublePendulum-v5").unwrapped
    env.reset(seed=0)
    env.set_state(qpos.numpy(), qvel.numpy())
    obs, rew, term = [], [], []
    for action in actions:
        o, r, t, _, _ = env.step(action.numpy())
        obs.append(o)
        rew.append(r)
        term.append(t)
    env.close()
    return torch.tensor(np.stack(obs)), torch.tensor(rew), torch.tensor(term)


def _rollout(env: InvertedDoublePendulumEnv, qpos, qvel, actions):
    """Steps ``env`` from ``(qpos, qvel)`` through ``actions`` ``(T, N, 1)``; ``(N, T, ...)``."""
    n = env.batch_size[0]
    td = env.reset(TensorDict(qpos=qpos, qvel=qvel, batch_size=[n]), set_state=True)
    torch.testing.assert_close(td["qpos"], qpos.to(env.dtype))
    steps = []
    for action in actions:
        td["action"] = action.to(env.dtype)
        td = env.step(td)
        steps.append(td["next"].clone())
        td = td["next"]
    return torch.stack(steps, dim=1)


def _assert_agrees(out, qpos, qvel, actions, obs_atol: float, rew_atol: float) -> None:
    for i in range(qpos.shape[0]):
        obs, rew, term = _gymnasium_rollout(qpos[i], qvel[i], actions[:, i])
        torch.testing.assert_close(out["observation"][i].double(), obs, atol=obs_atol, rtol=0)
        torch.testing.assert_close(out["reward"][i, :, 0].double(), rew, atol=rew_atol, rtol=0)
        assert torch.equal(out["terminated"][i, :, 0], term)


def test_feature_names():
    assert len(FEATURE_NAMES) == 9


def test_specs_mujoco_backend():
    check_env_specs(InvertedDoublePendulumEnv(backend="mujoco", seed=0))


def test_matches_gymnasium_mujoco_backend():
    """Same engine as Gymnasium: agreement to float32 precision over 12 steps."""
    qpos, qvel = _initial_states(2)
    actions = torch.rand(12, 2, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    env = InvertedDoublePendulumEnv(backend="mujoco", seed=0)
    outs = [_rollout(env, qpos[i : i + 1], qvel[i : i + 1], actions[:, i : i + 1]) for i in (0, 1)]
    out = torch.cat(outs, dim=0)
    _assert_agrees(out, qpos, qvel, actions, obs_atol=1e-5, rew_atol=1e-4)


def test_reward_and_termination_upright():
    """Upright and still: tip at 1.2 m, reward 10 - (1.2 - 2)^2, not terminated."""
    env = InvertedDoublePendulumEnv(backend="mujoco", seed=0)
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    out = _rollout(env, zeros, zeros, torch.zeros(1, 1, 1))
    torch.testing.assert_close(out["tip_height"][0, 0], torch.tensor([1.2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["reward"][0, 0], torch.tensor([10 - 0.64]), atol=1e-3, rtol=0)
    assert not out["terminated"].any()


@needs_mujoco_torch
def test_specs_mujoco_torch():
    check_env_specs(InvertedDoublePendulumEnv(num_envs=3, seed=0))


@needs_mujoco_torch
def test_matches_gymnasium_mujoco_torch():
    """Batched mujoco-torch vs MuJoCo: observations 1e-5, rewards 1e-3 (Gymnasium reads the
    tip from the last RK4 stage), terminations equal, over 10 steps into the fall."""
    qpos, qvel = _initial_states(3)
    actions = torch.rand(10, 3, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    env = InvertedDoublePendulumEnv(num_envs=3, dtype=torch.float64, seed=0)
    out = _rollout(env, qpos, qvel, actions)
    assert out["terminated"].any()  # the comparison covers the termination rule
    _assert_agrees(out, qpos, qvel, actions, obs_atol=1e-5, rew_atol=1e-3)


@needs_mujoco_torch
def test_partial_reset_mujoco_torch():
    """``_reset`` restarts only the flagged copies."""
    env = InvertedDoublePendulumEnv(num_envs=3, seed=0)
    td = env.reset()
    td["action"] = torch.ones(3, 1)
    after = env.step(td)["next"]
    mask = torch.tensor([[True], [False], [True]])
    reset = env.reset(after.clone().set("_reset", mask))
    torch.testing.assert_close(reset["qpos"][1], after["qpos"][1])
    torch.testing.assert_close(reset["qvel"][1], after["qvel"][1])
    for i in (0, 2):  # fresh draws from the reset distribution, not the stepped state
        assert reset["qpos"][i].abs().max() <= 0.1 + 1e-6
        assert not torch.allclose(reset["qvel"][i], after["qvel"][i])


@needs_mujoco_torch
def test_while_loop_patch_is_idempotent():
    from mujoco_torch._src import solver

    assert patch_mujoco_torch_while_loop()
    patched = solver.while_loop
    assert patch_mujoco_torch_while_loop()
    assert solver.while_loop is patched
