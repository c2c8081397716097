"""The shipped double-pendulum agent, attributed, on the MujocoEnv version of its task
(C-bindings backend here; the vmap-batched mujoco-torch backend when the gpu extra is in)."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import Compose, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.envs.double_pendulum import observation_norm_transforms
from tdhook_rl.envs.double_pendulum_gpu import InvertedDoublePendulumEnv
from tdhook_rl.targets import ActionLogProb

try:
    import mujoco_torch  # noqa: F401

    _MUJOCO_TORCH = None
except Exception as err:
    _MUJOCO_TORCH = f"mujoco-torch is not usable here ({type(err).__name__}); pip install .[gpu]"


def run(backend: str, num_envs: int, steps: int):
    agent = agents.load("double_pendulum")
    base = InvertedDoublePendulumEnv(num_envs=num_envs, backend=backend, seed=0)
    env = TransformedEnv(base, Compose(*observation_norm_transforms(agent.obs_norm, "cpu")))
    explained = thr.Attributed(
        agent.actor_critic,
        IntegratedGradients(n_steps=8),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "value": "state_value"},
    )
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return env.rollout(steps, explained, break_when_any_done=False)


def check(rollout):
    for head in ("policy", "value"):
        a = rollout["attribution", head, "observation"]
        assert a.shape == rollout["observation"].shape and torch.isfinite(a).all()
        assert rollout["attribution", head, "completeness_delta"].abs().max() < 1e-2
    # the trained agent keeps the poles up on this version of the task too
    assert not rollout["next", "terminated"].any()
    assert rollout["next", "reward"].mean() > 9.0


def test_mujoco_backend():
    check(run("mujoco", 1, 60))


@pytest.mark.skipif(_MUJOCO_TORCH is not None, reason=str(_MUJOCO_TORCH))
def test_mujoco_torch_backend_batched():
    rollout = run("mujoco-torch", 3, 6)
    assert rollout.batch_size == (3, 6)
    check(rollout)
