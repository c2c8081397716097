"""Gymnasium's ``InvertedDoublePendulum-v5`` (MuJoCo) as a TorchRL env, with simulator state.

The reference continuous-control task of tdhook_rl: a cart on a rail balances two stacked
poles (1 action, the force on the cart; 9 observations, see :data:`FEATURE_NAMES`). Episodes
end when the tip of the second pole drops to a height of 1 m or below (``terminated``) or
after 1,000 steps (``truncated``); a balancing step earns up to about 9.36, so the best
return is about 9,360.

Besides the ``"observation"`` the policy reads, every step of a rollout carries the simulator
state, for probing what a network has learned about the physics:

- ``"qpos"``: cart position (m), hinge 1 angle, hinge 2 angle (rad; hinge 2 is relative to
  pole 1), see :data:`QPOS_NAMES`;
- ``"qvel"``: their velocities, not clipped (the observation clips them to +-10), see
  :data:`QVEL_NAMES`;
- ``"tip_height"``: the height of the tip of pole 2 above the rail (m, shape ``(1,)``), the
  quantity Gymnasium's termination rule thresholds at 1 m (MuJoCo's ``site_xpos``, computed
  before the last integration substep: it differs from the height that ``qpos`` gives by
  ~1e-5 m);
- ``"raw_observation"``: the observation before standardization (only when ``obs_norm`` is
  given; otherwise ``"observation"`` is the raw one).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torchrl.envs import (
    ClipTransform,
    Compose,
    DeviceCastTransform,
    DoubleToFloat,
    GymWrapper,
    ObservationNorm,
    RenameTransform,
    StepCounter,
    TransformedEnv,
)

__all__ = [
    "ENV_ID",
    "FEATURE_NAMES",
    "MAX_EPISODE_STEPS",
    "QPOS_NAMES",
    "QVEL_NAMES",
    "SIMULATOR_KEYS",
    "SimulatorState",
    "make_double_pendulum",
]

ENV_ID = "InvertedDoublePendulum-v5"
MAX_EPISODE_STEPS = 1000

#: The 9 entries of ``"observation"``, in Gymnasium v5's order (``_get_obs``): cart position,
#: sines then cosines of the two hinge angles, the three velocities (clipped to +-10) and the
#: x constraint force on the cart (clipped to +-10; non-zero only at the ends of the rail).
FEATURE_NAMES: tuple[str, ...] = (
    "cart_position",
    "sin_hinge1",
    "sin_hinge2",
    "cos_hinge1",
    "cos_hinge2",
    "cart_velocity",
    "hinge1_velocity",
    "hinge2_velocity",
    "cart_constraint_force",
)
QPOS_NAMES: tuple[str, ...] = ("cart_position", "hinge1_angle", "hinge2_angle")
QVEL_NAMES: tuple[str, ...] = ("cart_velocity", "hinge1_velocity", "hinge2_velocity")
#: Keys of the simulator state written at every step (``"raw_observation"`` aside).
SIMULATOR_KEYS: tuple[str, ...] = ("qpos", "qvel", "tip_height")


class SimulatorState(gym.ObservationWrapper):
    """Turns the observation into a dict that adds MuJoCo's ``qpos``, ``qvel`` and tip height.

    ``{"observation": obs, "qpos": data.qpos, "qvel": data.qvel, "tip_height": z of the tip
    site}``, read after every ``reset`` and ``step``. The original observation is unchanged.
    Works inside Gymnasium's vector envs (each copy reads its own simulator), and TorchRL's
    :class:`~torchrl.envs.GymWrapper` turns each entry into a key of the TensorDict.

    Args:
        env: a Gymnasium ``InvertedDoublePendulum`` env (``gym.make(ENV_ID)``).

    Examples:
        >>> env = SimulatorState(gym.make(ENV_ID))
        >>> obs, _ = env.reset(seed=0)
        >>> sorted(obs), obs["qpos"].shape
        (['observation', 'qpos', 'qvel', 'tip_height'], (3,))
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        model = env.unwrapped.model  # type: ignore[attr-defined]
        self._tip = model.site("tip").id

        def box(n: int) -> gym.spaces.Box:
            return gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)

        self.observation_space = gym.spaces.Dict(
            {
                "observation": env.observation_space,
                "qpos": box(model.nq),
                "qvel": box(model.nv),
                "tip_height": box(1),
            }
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        data = self.env.unwrapped.data  # type: ignore[attr-defined]
        return {
            "observation": observation,
            "qpos": data.qpos.copy(),
            "qvel": data.qvel.copy(),
            "tip_height": data.site_xpos[self._tip, 2:3].copy(),
        }


def _make_gym_env(simulator_state: bool, **gym_kwargs: Any) -> gym.Env:
    env = gym.make(ENV_ID, **gym_kwargs)
    return SimulatorState(env) if simulator_state else env


def observation_norm_transforms(obs_norm: Mapping[str, Any], device: torch.device | str) -> list:
    """The transforms that standardize ``"observation"`` with an agent's ``obs_norm`` (a copy
    to ``"raw_observation"``, ``ObservationNorm``, an optional clip); also for other envs of
    the task, e.g. ``TransformedEnv(InvertedDoublePendulumEnv(...), Compose(*transforms))``."""
    return _norm_transforms(obs_norm, torch.device(device))


def _norm_transforms(obs_norm: Mapping[str, Any], device: torch.device) -> list:
    missing = {"loc", "scale"} - set(obs_norm)
    if missing:
        raise KeyError(
            f"obs_norm misses {sorted(missing)}; expected a dict with 'loc' and 'scale' "
            f"(9 entries each) and optionally 'clip', got keys {sorted(obs_norm)}"
        )
    loc = torch.as_tensor(obs_norm["loc"], dtype=torch.float32, device=device)
    scale = torch.as_tensor(obs_norm["scale"], dtype=torch.float32, device=device)
    n = len(FEATURE_NAMES)
    if loc.shape != (n,) or scale.shape != (n,):
        raise ValueError(
            f"obs_norm 'loc' and 'scale' must have shape ({n},), got {tuple(loc.shape)} and "
            f"{tuple(scale.shape)}"
        )
    if not bool((scale > 0).all()):
        raise ValueError("obs_norm 'scale' must be positive everywhere")
    transforms = [
        RenameTransform(["observation"], ["raw_observation"], create_copy=True),
        ObservationNorm(loc=loc, scale=scale, in_keys=["observation"], standard_normal=True),
    ]
    clip = obs_norm.get("clip")
    if clip is not None:
        transforms.append(ClipTransform(in_keys=["observation"], low=-clip, high=clip))
    return transforms


def make_double_pendulum(
    num_envs: int = 1,
    *,
    obs_norm: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    simulator_state: bool = True,
    asynchronous: bool = False,
    **gym_kwargs: Any,
) -> TransformedEnv:
    """Builds ``InvertedDoublePendulum-v5`` as a TorchRL env with float32 entries.

    Transforms, in order: ``DoubleToFloat`` (Gymnasium's MuJoCo entries are float64), then,
    if ``obs_norm`` is given, a copy of the observation to ``"raw_observation"``, an
    ``ObservationNorm`` ``(obs - loc) / scale`` with those fixed statistics and, if
    ``obs_norm["clip"]`` is set, a clip to ``[-clip, clip]``; finally a ``StepCounter``
    (``"step_count"``). Episodes are capped at 1,000 steps by Gymnasium's time limit
    (``truncated``).

    With ``num_envs > 1`` the copies run in a Gymnasium vector env with batch size
    ``(num_envs,)``; done copies are reset individually (TorchRL's partial resets, Gymnasium's
    ``AutoresetMode.DISABLED``), so ``env.rollout(..., break_when_any_done=False)`` and
    collectors work. ``asynchronous=True`` steps the copies in subprocesses
    (``AsyncVectorEnv``); scripts that use it need an ``if __name__ == "__main__":`` guard.
    The default (``SyncVectorEnv``, one process) is faster for this small simulator.

    Args:
        num_envs: number of copies; ``1`` gives an unbatched env (batch size ``()``).
        obs_norm: observation statistics ``{"loc": (9,), "scale": (9,), "clip": float |
            None}`` a policy was trained with (a shipped agent carries them, e.g.
            ``tdhook_rl.agents.load("double_pendulum").obs_norm``); ``None`` leaves the
            observation raw.
        device: device of the TensorDicts the env returns (the simulator itself runs on the
            CPU; a ``DeviceCastTransform`` moves the data).
        seed: seeds the env (copy ``i`` of a batched env gets ``seed + i``); ``None`` does not
            seed.
        simulator_state: write ``"qpos"``, ``"qvel"`` and ``"tip_height"`` at every step.
        asynchronous: with ``num_envs > 1``, run the copies in subprocesses.
        **gym_kwargs: forwarded to ``gymnasium.make`` (e.g. ``reset_noise_scale``,
            ``healthy_reward``).

    Returns:
        A ``TransformedEnv`` that passes ``torchrl.envs.check_env_specs``.

    Examples:
        >>> env = make_double_pendulum(seed=0)
        >>> td = env.rollout(5, break_when_any_done=False)
        >>> td["observation"].shape, td["qpos"].shape, td["tip_height"].shape
        (torch.Size([5, 9]), torch.Size([5, 3]), torch.Size([5, 1]))
        >>> batched = make_double_pendulum(4, seed=0)
        >>> batched.rollout(3, break_when_any_done=False)["observation"].shape
        torch.Size([4, 3, 9])
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    device = torch.device(device)
    make_one = partial(_make_gym_env, simulator_state, **gym_kwargs)
    gym_env: gym.Env | gym.vector.VectorEnv
    if num_envs == 1:
        gym_env = make_one()
    else:
        vector_cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
        gym_env = vector_cls(
            [make_one] * num_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED
        )
    # Gymnasium steps on the CPU: the wrapper stays there and a final DeviceCastTransform
    # moves every TensorDict to ``device`` (and actions back). A GymWrapper built directly on
    # a CUDA device fails at the first partial reset (torchrl 0.14 calls ``.numpy()`` on the
    # CUDA reset mask); TransformedEnv keeps the other transforms' buffers on the base env's
    # device, so the normalization runs on the CPU, before the cast.
    cpu = torch.device("cpu")
    base = GymWrapper(gym_env, device=cpu)
    transforms: list = [DoubleToFloat()]
    if obs_norm is not None:
        transforms += _norm_transforms(obs_norm, cpu)
    transforms.append(StepCounter())
    if device != cpu:
        transforms.append(DeviceCastTransform(device, orig_device=cpu))
    env = TransformedEnv(base, Compose(*transforms))
    if seed is not None:
        env.set_seed(seed)
    return env
