"""Gymnasium's ``InvertedDoublePendulum-v5`` on TorchRL's ``MujocoEnv``: thousands of copies,
one TensorDict, any device.

:class:`InvertedDoublePendulumEnv` is the task of :mod:`tdhook_rl.envs.double_pendulum` (same
MuJoCo model, observation, reward, termination and reset distribution as Gymnasium's v5) on
TorchRL's :class:`~torchrl.envs.custom.mujoco.MujocoEnv`. With ``backend="mujoco-torch"``
(the default) the physics is `mujoco-torch <https://pypi.org/project/mujoco-torch/>`_, MuJoCo
written in torch and batched with :func:`torch.vmap`, so ``num_envs`` copies step together on
the env's device (a GPU included) with no host round trip. ``backend="mujoco"`` uses the
MuJoCo C bindings (one copy per process, as TorchRL batches that backend).

Install the pinned stack with ``pip install -e .[gpu]`` (mujoco-torch 0.2.0 imports only
against mujoco 3.6.x/3.7.x; the project's default ``mujoco`` may be newer).

A fix for mujoco-torch 0.2.0 under torch 2.13
---------------------------------------------
mujoco-torch's constraint solver (``mujoco_torch._src.solver.while_loop``) calls
``torch._higher_order_ops.while_loop.while_loop`` whenever it runs inside vmap. In eager mode
torch 2.13 executes that function by compiling it with dynamo (``_hop_compile_and_call``);
dynamo then traces the solver's *nested* line-search ``while_loop`` with vmap's batched
tensors as example values and, checking the loop body for aliasing
(``get_tensor_storages``), asks a ``BatchedTensorImpl`` for its storage:
``NotImplementedError: Cannot access storage of BatchedTensorImpl``. Every model with a
constraint (here the slider's joint limit, always allocated by mujoco-torch) hits it.
:func:`patch_mujoco_torch_while_loop` makes that function call the ``while_loop`` operator
directly in eager vmap, which dispatches to mujoco-torch's own vmap batching rule for the
operator (a masked loop that runs until every copy has converged) without dynamo. Results are
unchanged; the patch is applied when the first env with the mujoco-torch backend is built.
``compile_step=True`` is not supported with this stack (see ``envs/GPU_DOUBLE_PENDULUM.md``).

Example:
    >>> from tdhook_rl.envs.double_pendulum_gpu import InvertedDoublePendulumEnv  # doctest: +SKIP
    >>> env = InvertedDoublePendulumEnv(num_envs=4096, device="cuda")  # doctest: +SKIP
    >>> rollout = env.rollout(100, break_when_any_done=False)  # doctest: +SKIP
    >>> rollout["next", "observation"].shape  # doctest: +SKIP
    torch.Size([4096, 100, 9])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data.tensor_specs import Composite, Unbounded
from torchrl.envs.custom.mujoco import MujocoEnv

from tdhook_rl.envs.double_pendulum import FEATURE_NAMES

__all__ = [
    "FEATURE_NAMES",
    "XML_PATH",
    "InvertedDoublePendulumEnv",
    "patch_mujoco_torch_while_loop",
]

#: Gymnasium's ``inverted_double_pendulum.xml`` (copied unchanged, with its MIT notice).
XML_PATH: Path = Path(__file__).resolve().parent / "assets" / "inverted_double_pendulum.xml"

#: The 9 entries of ``"observation"`` in Gymnasium v5's order (shared with ``double_pendulum``).

_PATCH_FLAG = "_tdhook_rl_eager_vmap_while_loop"


def patch_mujoco_torch_while_loop() -> bool:
    """Lets mujoco-torch's constraint solver run under eager :func:`torch.vmap` (torch 2.13).

    Replaces ``mujoco_torch._src.solver.while_loop`` by a wrapper that, only when called
    inside a functorch transform and outside ``torch.compile``, flattens the carry and calls
    the ``while_loop`` higher-order operator directly (mujoco-torch registers its vmap rule),
    instead of torch's ``while_loop`` function, which compiles with dynamo and fails on
    batched tensors. Every other call goes to the original function. Idempotent.

    Returns:
        ``True`` if the patch is in place (now or before), ``False`` if mujoco-torch is not
        importable.
    """
    try:
        from mujoco_torch._src import solver
    except (ImportError, AttributeError):
        return False
    if getattr(solver.while_loop, _PATCH_FLAG, False):
        return True

    import torch.utils._pytree as pytree
    from torch._higher_order_ops.while_loop import while_loop_op

    original = solver.while_loop

    def while_loop(cond_fn, body_fn, carried_inputs, max_iter=None):
        if torch.compiler.is_compiling() or not solver._inside_functorch():
            return original(cond_fn, body_fn, carried_inputs, max_iter)
        flat, spec = pytree.tree_flatten(carried_inputs)

        def flat_cond(*args):
            return cond_fn(*pytree.tree_unflatten(list(args), spec))

        def flat_body(*args):
            out = body_fn(*pytree.tree_unflatten(list(args), spec))
            # the operator forbids outputs that alias its inputs
            return tuple(t.clone() for t in pytree.tree_leaves(out))

        out = while_loop_op(flat_cond, flat_body, tuple(flat), ())
        return pytree.tree_unflatten(list(out), spec)

    setattr(while_loop, _PATCH_FLAG, True)
    while_loop.__wrapped__ = original  # type: ignore[attr-defined]
    while_loop.__doc__ = original.__doc__
    solver.while_loop = while_loop
    return True


class InvertedDoublePendulumEnv(MujocoEnv):
    """Gymnasium's ``InvertedDoublePendulum-v5`` as a batched TorchRL ``MujocoEnv``.

    A cart on a rail (limited to +-1 m) balances two stacked 0.6 m poles; the action, in
    ``[-1, 1]``, is the cart motor's control (gear 500). One env step is ``frame_skip=5``
    MuJoCo steps of 0.01 s (RK4). Matching Gymnasium v5:

    - ``"observation"`` (9 values, :data:`FEATURE_NAMES`): cart position, sines then cosines
      of the two hinge angles, the three velocities clipped to +-10, and the cart's
      constraint force (the rail limit) clipped to +-10;
    - reward: ``10 * (not terminated) - (0.01 x_tip^2 + (y_tip - 2)^2)
      - (1e-3 w1^2 + 5e-3 w2^2)``, ``(x_tip, y_tip)`` the tip of pole 2 in the vertical plane,
      ``w1, w2`` the hinge velocities;
    - ``terminated`` when ``y_tip <= 1``; ``truncated`` after ``max_episode_steps`` (1000);
    - reset: ``qpos ~ U(-0.1, 0.1)``, ``qvel ~ N(0, 0.1^2)`` (``reset_noise_scale=0.1``).

    Each step also carries the simulator state, with the keys of
    :mod:`tdhook_rl.envs.double_pendulum`: ``"qpos"`` and ``"qvel"`` (3 values each, not
    clipped) and ``"tip_height"`` (shape ``(1,)``). ``env.reset(td, set_state=True)`` with
    ``"qpos"``/``"qvel"`` in ``td`` starts from that state.

    The tip position is computed from the new ``qpos`` with the model's lengths (exact
    forward kinematics of this model); Gymnasium reads MuJoCo's ``site_xpos``, left over
    from the last RK4 stage, which differs from it by about 1e-7 m. The constraint force is
    the backend's ``qfrc_constraint`` (zero away from the rail's ends, where the two agree;
    at the ends mujoco-torch reports the force of the step's first RK4 stage and MuJoCo that
    of the last).

    Args:
        num_envs: number of copies; ``batch_size`` is ``(num_envs,)``.
        device: device of the state, observations and physics (``backend="mujoco-torch"``).
        backend: ``"mujoco-torch"`` (default, batched with vmap), ``"mujoco"`` (C bindings;
            ``num_envs > 1`` becomes a ``ParallelEnv``) or ``"mjx"``.
        healthy_reward: alive bonus per non-terminal step (Gymnasium's ``healthy_reward``).
        **kwargs: the other arguments of :class:`~torchrl.envs.custom.mujoco.MujocoEnv`
            (``seed``, ``frame_skip``, ``reset_noise_scale``, ``max_episode_steps``,
            ``dtype``, ...).
    """

    XML_PATH = XML_PATH
    FRAME_SKIP = 5
    RESET_NOISE_SCALE = 0.1
    TIP_Y_MIN = 1.0
    CLIP = 10.0

    def __init__(
        self,
        *,
        num_envs: int = 1,
        device: torch.device | str | None = None,
        backend: str = "mujoco-torch",
        healthy_reward: float = 10.0,
        **kwargs: Any,
    ) -> None:
        if backend == "mujoco-torch":
            patch_mujoco_torch_while_loop()
        self.healthy_reward = float(healthy_reward)
        super().__init__(num_envs=num_envs, device=device, backend=backend, **kwargs)
        model = self._backend.mj_model
        # tip of pole 2 in the (x, z) plane: base + l1 * e(q1) + l2 * e(q1 + q2)
        base = model.body("cart").pos + model.body("pole").pos
        self._base_xz = (float(base[0]), float(base[2]))
        self._l1 = float(model.body("pole2").pos[2])
        self._l2 = float(model.site("tip").pos[2])
        self._init_qpos = torch.as_tensor(model.qpos0, device=self.device)

    # -- state -----------------------------------------------------------------------------

    def _tip(self, qpos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World ``(x, y)`` of the tip of pole 2 (Gymnasium's ``x, _, y = site_xpos[0]``)."""
        a1 = qpos[..., 1]
        a12 = a1 + qpos[..., 2]
        x = self._base_xz[0] + qpos[..., 0] + self._l1 * a1.sin() + self._l2 * a12.sin()
        y = self._base_xz[1] + self._l1 * a1.cos() + self._l2 * a12.cos()
        return x, y

    def _constraint_force(self) -> torch.Tensor:
        """The backend's ``qfrc_constraint``, ``(num_envs, nv)``, zeros if not exposed."""
        backend = self._backend
        if hasattr(backend, "_dx"):  # mujoco-torch
            frc = backend._dx.qfrc_constraint
        elif hasattr(backend, "_d"):  # MuJoCo C bindings (one copy)
            frc = torch.as_tensor(backend._d.qfrc_constraint.copy()).unsqueeze(0)
        else:
            return torch.zeros(self.num_envs, backend.nv, device=self.device)
        return frc.to(self.device)

    def _state_td(self) -> TensorDictBase:
        state = super()._state_td()
        state["qfrc_constraint"] = self._constraint_force()
        return state

    def _sample_initial_state(
        self, n: int, tensordict: TensorDictBase | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self._backend.qpos0.dtype
        qpos = self._init_qpos.to(dtype).expand(n, -1)
        scale = self.reset_noise_scale
        noise_q = torch.empty_like(qpos).uniform_(-scale, scale, generator=self.rng)
        noise_v = torch.randn(
            n, self._backend.nv, dtype=dtype, device=self.device, generator=self.rng
        )
        return qpos + noise_q, noise_v * scale

    # -- observation -----------------------------------------------------------------------

    def _make_obs(self, state: TensorDictBase) -> torch.Tensor:
        qpos = state["qpos"]
        angles = qpos[..., 1:]
        obs = torch.cat(
            [
                qpos[..., :1],
                angles.sin(),
                angles.cos(),
                state["qvel"].clamp(-self.CLIP, self.CLIP),
                state["qfrc_constraint"][..., :1].to(qpos.dtype).clamp(-self.CLIP, self.CLIP),
            ],
            dim=-1,
        )
        return obs.to(self.dtype)

    def _build_obs_dict(self, state: TensorDictBase) -> dict[str, torch.Tensor]:
        out = super()._build_obs_dict(state)
        out["qpos"] = state["qpos"].to(self.dtype)
        out["qvel"] = state["qvel"].to(self.dtype)
        out["tip_height"] = self._tip(state["qpos"])[1].unsqueeze(-1).to(self.dtype)
        return out

    def _make_obs_spec(self) -> Composite:
        def spec(n: int) -> Unbounded:
            return Unbounded(shape=(self.num_envs, n), dtype=self.dtype, device=self.device)

        nq, nv = self._backend.nq, self._backend.nv
        return Composite(
            observation=spec(len(FEATURE_NAMES)),
            qpos=spec(nq),
            qvel=spec(nv),
            tip_height=spec(1),
            shape=(self.num_envs,),
            device=self.device,
        )

    # -- reward and termination ------------------------------------------------------------

    def _compute_reward(
        self, state: TensorDictBase, action: torch.Tensor, next_state: TensorDictBase
    ) -> torch.Tensor:
        x, y = self._tip(next_state["qpos"])
        qvel = next_state["qvel"]
        dist_penalty = 0.01 * x**2 + (y - 2) ** 2
        vel_penalty = 1e-3 * qvel[..., 1] ** 2 + 5e-3 * qvel[..., 2] ** 2
        alive = (y > self.TIP_Y_MIN).to(x.dtype) * self.healthy_reward
        return (alive - dist_penalty - vel_penalty).unsqueeze(-1).to(self.dtype)

    def _compute_done(self, state: TensorDictBase, next_state: TensorDictBase) -> torch.Tensor:
        return (self._tip(next_state["qpos"])[1] <= self.TIP_Y_MIN).unsqueeze(-1)
