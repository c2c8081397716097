"""Overhead of tdhook_rl inside ``env.rollout`` and a TorchRL ``Collector`` (double pendulum).

A 2x256 Tanh actor-critic (TanhNormal policy + value head) collects from
InvertedDoublePendulum-v5 (8 copies in one process), in a ``Collector`` and in
``env.rollout``. Contestants collect the same frames with
the plain module, with ``Recorded`` on 3 sites, and with ``Attributed`` (saliency and
integrated gradients) on both heads. Deterministic actions and identically seeded envs make
every contestant's actions equal to the plain run's, which the agreement column checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    NormalParamExtractor,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
)
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType, set_exploration_type
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


class _CarryThreeEntries(TensorDictModuleBase):
    """The plain module plus three ready-made [*batch, 256] entries under ``activations``:
    what TorchRL charges for carrying recorded activations, with no recording at all."""

    def __init__(self, module: TensorDictSequential) -> None:
        super().__init__()
        self.module = module
        self.in_keys = list(module.in_keys)
        self.names = ("h1", "h2", "critic_h1")
        self.out_keys = list(module.out_keys) + [("activations", n) for n in self.names]
        self._ready: dict[torch.Size, TensorDict] = {}

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self.module(tensordict)
        batch = out.batch_size
        if batch not in self._ready:  # on the output's device, as Recorded writes them
            zeros = {n: torch.zeros(*batch, HIDDEN, device=out.device) for n in self.names}
            self._ready[batch] = TensorDict(zeros, batch_size=batch, device=out.device)
        out.set("activations", self._ready[batch].copy())
        return out


def _wrap(name: str, module: TensorDictSequential):
    import tdhook_rl as thr
    from tdhook_rl.attribution import IntegratedGradients, Saliency
    from tdhook_rl.targets import ActionLogProb

    targets = {"policy": ActionLogProb(), "value": "state_value"}
    if name == "plain":
        return module
    if name == "carry-3-entries":
        return _CarryThreeEntries(module)
    if name.startswith("recorded-3-sites"):
        sites = [
            "module.0.module.0.module.0.1",
            "module.0.module.0.module.0.3",
            "module.1.module.1",
        ]
        return thr.Recorded(module, sites, packed=name.endswith("packed"))
    method = Saliency(abs=False) if name == "saliency-2-heads" else IntegratedGradients(16)
    return thr.Attributed(module, method, inputs=["observation"], targets=targets)


def _policy(name: str, seed: int):
    return _wrap(name, actor_critic(seed))


def _unpack_of(policy) -> Callable[[TensorDictBase], TensorDictBase] | None:
    """``Recorded.unpack`` for a packed recorder (its per-batch cost is part of the run)."""
    return policy.unpack if getattr(policy, "packed", False) else None


def _collector_builder(
    name: str, seed: int, batches: int
) -> Callable[[], Callable[[], torch.Tensor]]:
    def build():
        from tdhook_rl.envs.double_pendulum import make_double_pendulum

        policy = _policy(name, seed)
        collector = Collector(
            lambda: make_double_pendulum(ENVS, seed=seed),
            policy,
            frames_per_batch=FRAMES_PER_BATCH,
            total_frames=-1,
            exploration_type=ExplorationType.DETERMINISTIC,
            auto_register_policy_transforms=False,
            postproc=_unpack_of(policy),
        )
        iterator = iter(collector)

        def collect() -> torch.Tensor:
            return torch.cat([next(iterator)["action"].reshape(-1) for _ in range(batches)])

        return collect

    return build


def _rollout_builder(name: str, seed: int, steps: int) -> Callable[[], Callable[[], torch.Tensor]]:
    def build():
        from tdhook_rl.envs.double_pendulum import make_double_pendulum

        env = make_double_pendulum(ENVS, seed=seed)
        policy = _policy(name, seed)
        unpack = _unpack_of(policy) or (lambda data: data)

        def rollout() -> torch.Tensor:
            with set_exploration_type(ExplorationType.DETERMINISTIC):
                data = unpack(env.rollout(steps, policy, break_when_any_done=False))
            return data["action"].reshape(-1)

        return rollout

    return build


RECORDING = ("plain", "recorded-3-sites", "recorded-3-sites-packed", "carry-3-entries")
ATTRIBUTION = ("plain", "saliency-2-heads", "ig16-2-heads")


def run(config: RunConfig) -> BenchmarkResult:
    """Three cases: recording in a Collector (many short paired rounds, for the 5% bar),
    attribution in a Collector, and all four contestants in ``env.rollout``."""
    quick = config.quick
    seed = config.seed
    tolerance = Tolerance(atol_scaled=0.0, rtol=0.0)  # actions must be identical
    steps = 16 if quick else FRAMES_PER_BATCH // ENVS
    plans = [  # label, builders, warm-up, repeats
        (
            f"Collector, recording: {FRAMES_PER_BATCH} frames per call",
            {n: _collector_builder(n, seed, 1) for n in RECORDING},
            *((0, 3) if quick else (2, 81)),
        ),
        (
            f"Collector, attribution: {(1 if quick else 4) * FRAMES_PER_BATCH} frames per call",
            {n: _collector_builder(n, seed, 1 if quick else 4) for n in ATTRIBUTION},
            *((0, 3) if quick else (1, 11)),
        ),
        (
            f"env.rollout: {steps} steps x {ENVS} copies per call",
            {n: _rollout_builder(n, seed, steps) for n in RECORDING[:3] + ATTRIBUTION[1:]},
            *((0, 2) if quick else (1, 15)),
        ),
    ]
    cases = [
        run_case(
            label, {"envs": ENVS}, builders, "plain", tolerance, warmup, repeats, config.device
        )
        for label, builders, warmup, repeats in plans
    ]
    return BenchmarkResult(
        name=NAME,
        title="Inside env.rollout and a Collector: recording and attribution overhead",
        description=(
            f"Wall time to collect frames from InvertedDoublePendulum-v5 ({ENVS} copies, one "
            "process) with a 2x256 actor-critic, in a `Collector` and in `env.rollout` "
            "(`break_when_any_done=False`, partial resets); the `/ plain` column is the "
            "overhead factor (issue bar for recording 3 sites: < 1.05). The recording case "
            "times plain and recorded collection alone, one batch per call over many rounds, "
            "so that `paired / plain` (the median of the per-round ratios) is steady on a "
            "noisy machine."
        ),
        settings={
            "hidden": HIDDEN,
            "envs": ENVS,
            "frames_per_batch": FRAMES_PER_BATCH,
            "warm-up, repeats per case": [(w, r) for _, _, w, r in plans],
        },
        reference="plain",
        focus=None,
        tolerance=tolerance,
        cases=cases,
        notes=[
            "`recorded-3-sites`: `Recorded` on both hidden layers of the actor and the critic's"
            ' first hidden layer, each written under `("activations", site)`.',
            "`recorded-3-sites-packed`: the same with `packed=True` (one [8, 768] entry per step,"
            " split per site by `Recorded.unpack` as the collector's `postproc` or after"
            " `env.rollout`, included in the time).",
            "`saliency-2-heads`, `ig16-2-heads`: `Attributed` with targets `ActionLogProb()` and"
            " `state_value`, `Saliency(abs=False)` or `IntegratedGradients(n_steps=16)`.",
            "Agreement: the collected actions, compared exactly with the plain run's.",
            "`carry-3-entries`: the plain module plus three ready-made zero [8, 256] entries"
            " under `activations` (a shallow copy of one prebuilt TensorDict on the output's"
            " device per call, as `Recorded` writes them): what"
            " TorchRL charges for carrying three more policy outputs of that size (its"
            " `step_mdp`, the partial-reset `where`, the batch stacking), with no recording."
            " `recorded-3-sites` over it is `Recorded`'s own cost.",
        ],
    )
