"""Overhead of tdhook_rl inside a TorchRL ``Collector`` on the double pendulum.

A 2x256 Tanh actor-critic (TanhNormal policy + value head) collects from
InvertedDoublePendulum-v5 (8 copies in one process). Contestants collect the same frames with
the plain module, with ``Recorded`` on 3 sites, and with ``Attributed`` (saliency and
integrated gradients) on both heads. Deterministic actions and identically seeded envs make
every contestant's actions equal to the plain run's, which the agreement column checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

from benchmarks.harness import BenchmarkResult, RunConfig, Tolerance, run_case

NAME = "in_rollout"
HIDDEN = 256
ENVS = 8
FRAMES_PER_BATCH = 512


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, HIDDEN),
        nn.Tanh(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.Tanh(),
        nn.Linear(HIDDEN, n_out),
    )


def actor_critic(seed: int) -> TensorDictSequential:
    torch.manual_seed(seed)
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(_mlp(9, 2), NormalParamExtractor()), ["observation"], ["loc", "scale"]
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    return TensorDictSequential(actor, ValueOperator(_mlp(9, 1), in_keys=["observation"]))


def _wrap(name: str, module: TensorDictSequential):
    import tdhook_rl as thr
    from tdhook_rl.attribution import IntegratedGradients, Saliency
    from tdhook_rl.targets import ActionLogProb

    targets = {"policy": ActionLogProb(), "value": "state_value"}
    if name == "plain":
        return module
    if name == "recorded-3-sites":
        sites = [
            "module.0.module.0.module.0.1",
            "module.0.module.0.module.0.3",
            "module.1.module.1",
        ]
        return thr.Recorded(module, sites)
    method = Saliency(abs=False) if name == "saliency-2-heads" else IntegratedGradients(16)
    return thr.Attributed(module, method, inputs=["observation"], targets=targets)


def _builder(name: str, seed: int, batches: int) -> Callable[[], Callable[[], torch.Tensor]]:
    def build():
        from tdhook_rl.envs.double_pendulum import make_double_pendulum

        policy = _wrap(name, actor_critic(seed))
        collector = Collector(
            lambda: make_double_pendulum(ENVS, seed=seed),
            policy,
            frames_per_batch=FRAMES_PER_BATCH,
            total_frames=-1,
            exploration_type=ExplorationType.DETERMINISTIC,
            auto_register_policy_transforms=False,
        )
        iterator = iter(collector)

        def collect() -> torch.Tensor:
            return torch.cat([next(iterator)["action"].reshape(-1) for _ in range(batches)])

        return collect

    return build


def run(config: RunConfig) -> BenchmarkResult:
    """Collect ``batches`` batches of 512 frames per timed call with each contestant."""
    warmup, repeats, batches = (0, 3, 2) if config.quick else (1, 11, 4)
    names = ("plain", "recorded-3-sites", "saliency-2-heads", "ig16-2-heads")
    builders = {n: _builder(n, config.seed, batches) for n in names}
    tolerance = Tolerance(atol_scaled=0.0, rtol=0.0)  # actions must be identical
    case = run_case(
        f"{batches * FRAMES_PER_BATCH} frames",
        {"envs": ENVS},
        builders,
        "plain",
        tolerance,
        warmup,
        repeats,
        config.device,
    )
    return BenchmarkResult(
        name=NAME,
        title="Inside a Collector: recording and attribution overhead",
        description=(
            f"Wall time to collect {batches} x {FRAMES_PER_BATCH} frames from "
            f"InvertedDoublePendulum-v5 ({ENVS} copies, one process) with a 2x256 actor-critic;"
            " the `/ plain` column is the overhead factor (issue bar for recording: < 1.05)."
        ),
        settings={
            "hidden": HIDDEN,
            "envs": ENVS,
            "frames_per_batch": FRAMES_PER_BATCH,
            "batches_per_call": batches,
            "extra warmup": warmup,
            "repeats": repeats,
        },
        reference="plain",
        focus=None,
        tolerance=tolerance,
        cases=[case],
        notes=[
            "`recorded-3-sites`: `Recorded` on both hidden layers of the actor and the critic's"
            " first hidden layer.",
            "`saliency-2-heads`, `ig16-2-heads`: `Attributed` with targets `ActionLogProb()` and"
            " `state_value`, `Saliency(abs=False)` or `IntegratedGradients(n_steps=16)`.",
            "Agreement: the collected actions, compared exactly with the plain run's.",
        ],
    )
