"""Double-pendulum concepts: the physical state, the total energy, the time until the tip
falls.

They read the simulator state that ``tdhook_rl.envs.double_pendulum`` writes at every step:
``qpos`` (cart position, hinge 1 angle, hinge 2 angle relative to pole 1), ``qvel`` (their
velocities) and ``tip_height`` (m). The energy is MuJoCo's own (``mjENBL_ENERGY``) on
Gymnasium's ``inverted_double_pendulum.xml`` model: kinetic energy of the cart and both poles
plus their potential energy ``sum_i m_i g z_i`` (zero at the rail's height), in joules.
mujoco and gymnasium are imported when the energy is computed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase

from tdhook_rl.concepts.labels.future import steps_until

__all__ = [
    "FALL_HEIGHT",
    "double_pendulum_energy",
    "double_pendulum_model",
    "pendulum_concepts",
    "time_to_fall",
]

#: Gymnasium ends an episode when the tip is at this height (m) or below
FALL_HEIGHT = 1.0
_STATE = ("cart_position", "hinge1_angle", "hinge2_angle")
_VELOCITY = ("cart_velocity", "hinge1_velocity", "hinge2_velocity")


@functools.lru_cache(maxsize=1)
def double_pendulum_model() -> Any:
    """MuJoCo's model of Gymnasium's ``InvertedDoublePendulum`` with energy computation on."""
    import gymnasium
    import mujoco

    xml = Path(gymnasium.__file__).parent / "envs/mujoco/assets/inverted_double_pendulum.xml"
    model = mujoco.MjModel.from_xml_path(str(xml))
    model.opt.enableflags |= mujoco.mjtEnableBit.mjENBL_ENERGY
    return model


def double_pendulum_energy(qpos: torch.Tensor, qvel: torch.Tensor) -> torch.Tensor:
    """Kinetic plus potential energy (J) of each state.

    Args:
        qpos: ``[..., 3]``; qvel: ``[..., 3]`` (see the module's docstring).

    Returns:
        ``[...]`` float32.

    Examples:
        >>> rest = double_pendulum_energy(torch.zeros(3), torch.zeros(3))  # upright, still
        >>> moving = double_pendulum_energy(torch.zeros(3), torch.tensor([1.0, 0.0, 0.0]))
        >>> bool(moving > rest)
        True
    """
    import mujoco

    if qpos.shape[-1:] != (3,) or qvel.shape != qpos.shape:
        raise ValueError(
            f"qpos and qvel are [..., 3] each (cart, hinge 1, hinge 2), got "
            f"{tuple(qpos.shape)} and {tuple(qvel.shape)}"
        )
    model = double_pendulum_model()
    data = mujoco.MjData(model)
    pos = qpos.reshape(-1, 3).double().cpu().numpy()
    vel = qvel.reshape(-1, 3).double().cpu().numpy()
    out = torch.empty(pos.shape[0], dtype=torch.float64)
    for i in range(pos.shape[0]):
        data.qpos[:], data.qvel[:] = pos[i], vel[i]
        mujoco.mj_forward(model, data)
        out[i] = float(data.energy[0] + data.energy[1])
    return out.reshape(qpos.shape[:-1]).float()


def time_to_fall(
    td: TensorDictBase,
    *,
    height: float = FALL_HEIGHT,
    horizon: int | None = None,
    key: str = "tip_height",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps from each state until the tip is at ``height`` or below, from the rollout's
    future (:func:`~tdhook_rl.concepts.labels.future.steps_until` on ``("next", key)``).

    Returns:
        ``(steps, valid)``: ``valid`` is False where the episode (or the data) ends first
        without a fall (within ``horizon`` steps when given: then ``steps = horizon``).

    Examples:
        >>> from tensordict import TensorDict
        >>> tip = torch.tensor([1.1, 1.05, 0.9]).unsqueeze(-1)
        >>> done = torch.tensor([0, 0, 1], dtype=torch.bool).unsqueeze(-1)
        >>> td = TensorDict({("next", "tip_height"): tip, ("next", "done"): done}, [3])
        >>> time_to_fall(td)[0].tolist()
        [3.0, 2.0, 1.0]
    """
    if ("next", key) not in td.keys(True):
        raise KeyError(
            f"the rollout has no ('next', {key!r}): record it with make_double_pendulum(), "
            "which writes the simulator state"
        )
    tip = td.get(("next", key))
    return steps_until(td, tip.reshape(td.batch_size) <= height, horizon=horizon)


def pendulum_concepts(
    td: TensorDictBase, *, horizon: int | None = 100, energy: bool = True
) -> dict[str, torch.Tensor]:
    """The physical state, the energy and the time to falling of every step of a rollout.

    Args:
        td: a double-pendulum rollout with ``qpos``, ``qvel``, ``tip_height`` and their
            ``"next"`` entries.
        horizon: the cap of ``time_to_fall`` (see :func:`time_to_fall`).
        energy: compute the energy (a MuJoCo forward per step).

    Returns:
        ``{name: [*batch]}``: ``cart_position``, ``hinge1_angle``, ``hinge2_angle``,
        their velocities, ``tip_height``, ``energy``, ``time_to_fall`` (``nan`` where
        unknown) and ``time_to_fall_valid`` (bool).
    """
    for k in ("qpos", "qvel", "tip_height"):
        if k not in td.keys():
            raise KeyError(f"the rollout has no {k!r}: make the env with make_double_pendulum()")
    qpos, qvel = td.get("qpos"), td.get("qvel")
    out = {n: qpos[..., i].float() for i, n in enumerate(_STATE)}
    out |= {n: qvel[..., i].float() for i, n in enumerate(_VELOCITY)}
    out["tip_height"] = td.get("tip_height").reshape(td.batch_size).float()
    if energy:
        out["energy"] = double_pendulum_energy(qpos, qvel)
    steps, valid = time_to_fall(td, horizon=horizon)
    out["time_to_fall"], out["time_to_fall_valid"] = steps, valid
    return out
