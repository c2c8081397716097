"""Attributed transitions per second on batched environments that live on the device.

The shipped agents roll out on their batched pure-torch environments (Connect Four, and the
double pendulum on TorchRL's ``MujocoEnv`` with the mujoco-torch backend), with the plain
policy and with ``Attributed`` on both heads (saliency, integrated gradients with 16 steps),
eagerly, under ``torch.compile`` and captured in CUDA graphs (tensordict's
``CudaGraphModule``). 1,024, 4,096 and 16,384 copies on a GPU; 64 copies on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from benchmarks.harness import (
    BenchmarkResult,
    CaseResult,
    ContestantResult,
    ContestantUnavailable,
    RunConfig,
    Tolerance,
    run_case,
)

NAME = "gpu_rollout"
GPU_COPIES = (1024, 4096, 16384)
CPU_COPIES = (64,)
STEPS = {"connect_four": 16, "double_pendulum": 4}
EAGER = ("plain", "saliency-2-heads", "ig16-2-heads")
# torch.compile of Attributed itself is left out: the compiled backward cannot run under the
# vmap of `autograd.grad(is_grads_batched=True)` ("Cannot access storage of
# BatchedTensorImpl", torch 2.13); see benchmarks/README.md
COMPILED = ("plain-compiled", "ig16-cudagraph")
TOLERANCE = Tolerance(atol_scaled=1e-4, rtol=1e-3)  # compiled kernels round differently
BUDGET_S = 8.0


def _connect_four(copies: int, device: torch.device, seed: int):
    from tdhook_rl import agents
    from tdhook_rl.envs.connect_four import ConnectFourEnv
    from tdhook_rl.targets import ActionLogProb

    env = ConnectFourEnv(batch_size=[copies], device=device)
    agent = agents.load("connect_four", device=str(device))
    return env, agent, {"move": ActionLogProb(), "value": "state_value"}


def _double_pendulum(copies: int, device: torch.device, seed: int):
    try:
        import mujoco_torch  # noqa: F401
    except Exception as err:
        raise ContestantUnavailable(
            f"mujoco-torch ({type(err).__name__}); pip install .[gpu]"
        ) from err
    from torchrl.envs import Compose, TransformedEnv

    from tdhook_rl import agents
    from tdhook_rl.envs.double_pendulum import observation_norm_transforms
    from tdhook_rl.envs.double_pendulum_gpu import InvertedDoublePendulumEnv
    from tdhook_rl.targets import ActionLogProb

    agent = agents.load("double_pendulum", device=str(device))
    base = InvertedDoublePendulumEnv(num_envs=copies, device=device, seed=seed)
    env = TransformedEnv(base, Compose(*observation_norm_transforms(agent.obs_norm, device)))
    return env, agent.actor_critic, {"policy": ActionLogProb(), "value": "state_value"}


ENVS: dict[str, Callable[[int, torch.device, int], tuple[Any, Any, dict[str, Any]]]] = {
    "connect_four": _connect_four,
    "double_pendulum": _double_pendulum,
}


def _policy(name: str, module, targets, device: torch.device):
    import tdhook_rl as thr
    from tdhook_rl.attribution import IntegratedGradients, Saliency

    if name.startswith("plain"):
        policy = module
    else:
        method = Saliency(abs=False) if name.startswith("saliency") else IntegratedGradients(16)
        policy = thr.Attributed(module, method, inputs=["observation"], targets=targets)
    if name.endswith("-compiled"):
        policy = torch.compile(policy)
    elif name.endswith("-cudagraph"):
        if device.type != "cuda":
            raise ContestantUnavailable("CUDA graphs need a CUDA device")
        from tensordict.nn import CudaGraphModule

        policy = _GraphedPolicy(policy, CudaGraphModule(policy, warmup=2))
    return policy


class _GraphedPolicy(TensorDictModuleBase):
    """A ``CudaGraphModule`` as a one-argument TensorDict policy for ``env.rollout`` (which
    refuses ``CudaGraphModule``'s ``*args`` signature); the replay's static output buffers
    are copied out (and unlocked: the static output is a locked TensorDict), since the next
    replay overwrites them."""

    def __init__(self, module: TensorDictModuleBase, graphed: Any) -> None:
        super().__init__()
        self.in_keys = list(module.in_keys)
        self.out_keys = list(module.out_keys)
        self.graphed = graphed

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self.graphed(tensordict).select(*self.out_keys).clone()
        return tensordict.update(out.unlock_())


def _builder(name: str, env, module, targets, steps: int, seed: int, device, peaks: dict):
    def build():
        policy = _policy(name, module, targets, device)

        def rollout() -> torch.Tensor:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            env.set_seed(seed)
            with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
                td = env.rollout(steps, policy, break_when_any_done=False)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) - base
                peaks[name] = max(peaks.get(name, 0), peak)
            return td["action"].float()

        return rollout

    return build


def _case(env_name: str, copies: int, names, config: RunConfig, quick: bool) -> CaseResult:
    label = f"{env_name}, {copies} copies"
    steps = STEPS[env_name]
    params = {"env": env_name, "copies": copies, "steps": steps}
    try:
        env, module, targets = ENVS[env_name](copies, config.device, config.seed)
    except ContestantUnavailable as err:
        skipped = [ContestantResult(n, "skipped", f"not available: {err}") for n in names]
        return CaseResult(label, params, skipped)
    peaks: dict[str, int] = {}
    builders = {
        n: _builder(n, env, module, targets, steps, config.seed, config.device, peaks)
        for n in names
    }
    warmup, repeats = (0, 2) if quick else (1, 3)
    case = run_case(
        label, params, builders, "plain", TOLERANCE, warmup, repeats, config.device, BUDGET_S
    )
    for c in case.contestants:
        if c.timing is not None:
            c.extras["transitions/s"] = copies * steps / c.timing.median_s
        if c.name in peaks:
            c.extras["peak MiB"] = peaks[c.name] / 2**20
    env.close()
    return case


def run(config: RunConfig) -> BenchmarkResult:
    """All copies and contestants on ``config.device``; compiled variants at the first size
    (``config.quick``: Connect Four only).

    ``config.time_budget_s`` (if set) skips the cases that would start after it ran out.
    """
    on_gpu = config.device.type == "cuda"
    sizes = GPU_COPIES if on_gpu else CPU_COPIES
    start = time.perf_counter()
    cases = []
    for env_name in ENVS:  # the cheap board game first; a time budget cuts the pendulum's sizes
        for i, copies in enumerate(sizes):
            names = EAGER + COMPILED if (i == 0 and on_gpu) else EAGER
            if config.quick and env_name != "connect_four":
                skipped = [ContestantResult(n, "skipped", "not run with --quick") for n in names]
                cases.append(CaseResult(f"{env_name}, {copies} copies", {}, skipped))
                continue
            budget = config.time_budget_s
            if budget is not None and time.perf_counter() - start > budget:
                skipped = [ContestantResult(n, "skipped", "out of time budget") for n in names]
                cases.append(CaseResult(f"{env_name}, {copies} copies", {}, skipped))
                continue
            print(f"[benchmarks] {NAME}: {env_name}, {copies} copies", flush=True)
            cases.append(_case(env_name, copies, names, config, config.quick))
    return BenchmarkResult(
        name=NAME,
        title="Attributed rollouts on batched device environments",
        description=(
            "Wall time of one `env.rollout` of the shipped agents on their batched pure-torch"
            f" environments ({', '.join(f'{k}: {v} steps' for k, v in STEPS.items())}),"
            " deterministic actions; `transitions/s` = copies x steps / median time, `peak MiB`"
            " = the call's peak GPU memory above what was allocated before it."
        ),
        settings={"copies": sizes, "steps": STEPS, "budget per contestant s": BUDGET_S},
        reference="plain",
        focus=None,
        tolerance=TOLERANCE,
        cases=cases,
        notes=[
            "`plain`: the agent itself; `saliency-2-heads` / `ig16-2-heads`: `Attributed` with"
            " the move or action log-probability and the state value as targets, `Saliency"
            "(abs=False)` or `IntegratedGradients(n_steps=16)`.",
            "`-compiled`: the policy passed through `torch.compile` (default mode);"
            " `-cudagraph`: `Attributed` wrapped in `tensordict.nn.CudaGraphModule` (captured"
            " after 2 warm-up calls, replayed per step). Only at the first size, where launch"
            " overhead matters most. The environment step itself is not compiled (mujoco-torch"
            " `compile_step` fails, see `envs/GPU_DOUBLE_PENDULUM.md`).",
            "Agreement: the actions, against the plain rollout's.",
        ],
    )
