"""Integrated-gradients sweep over the number of targets and the observation size.

The actor-critic of ``multi_target_ig`` with a policy head sized to the number of targets
(``n - 1`` logits plus the value; a single target is the value alone) and observations of
9 features, 256 features, or an 8x8x12 board (flattened by the trunk). Batch 64,
50 Gauss-Legendre steps, zero baseline.
"""

from __future__ import annotations

import itertools
import math

from benchmarks.harness import BenchmarkResult, CaseResult, RunConfig
from benchmarks.ig_contestants import TOLERANCE, run_ig_case
from benchmarks.models import actor_critic, observations

NAME = "ig_sweep"
CONTESTANTS = ("captum", "tdhook", "tdhook-loop", "floor", "tdhook_rl")
BATCH = 64
HIDDEN = 256
N_STEPS = 50
RULE = "gausslegendre"
TARGETS = (1, 2, 17, 64)
OBS_SHAPES: tuple[tuple[int, ...], ...] = ((9,), (256,), (8, 8, 12))
FULL_CASES = list(itertools.product(OBS_SHAPES, TARGETS))
QUICK_CASES: list[tuple[tuple[int, ...], int]] = [
    ((9,), 1),
    ((9,), 17),
    ((9,), 64),
    ((8, 8, 12), 17),
]


def _label(shape: tuple[int, ...], n_targets: int) -> str:
    return f"T={n_targets}, obs={'x'.join(map(str, shape))}"


def run(config: RunConfig) -> BenchmarkResult:
    """Run the sweep; ``config.quick``: 4 of the 12 cases, fewer repeats, no tdhook-loop."""
    cases_to_run, warmup, repeats = (QUICK_CASES, 0, 3) if config.quick else (FULL_CASES, 1, 5)
    cases: list[CaseResult] = []
    for shape, n_targets in cases_to_run:
        obs = observations(BATCH, shape, seed=config.seed + 1, device=config.device)
        n_logits = max(n_targets - 1, 1)
        net = actor_critic(shape, n_logits, HIDDEN, seed=config.seed, device=config.device)
        # columns of cat(logits, value): the first n - 1 logits, then the value
        columns = [*range(n_targets - 1), n_logits]
        # --quick leaves tdhook-loop to multi_target_ig, which always runs it
        contestants = tuple(c for c in CONTESTANTS if not (config.quick and c == "tdhook-loop"))
        if math.prod(shape) < n_targets:  # forward mode is the cheaper floor there
            contestants = (*contestants[:-1], "floor-jvp", contestants[-1])
        cases.append(
            run_ig_case(
                _label(shape, n_targets),
                net,
                obs,
                columns,
                contestants,
                N_STEPS,
                RULE,
                warmup,
                repeats,
            )
        )
    return BenchmarkResult(
        name=NAME,
        title="Integrated-gradients sweep: targets x observation size",
        description=(
            "The same job as `multi_target_ig` at other sizes: T targets (T - 1 logits and the"
            " value; T=1 is the value alone) of a batch of 64, observations of 9 or 256"
            " features or an 8x8x12 board flattened by the trunk."
        ),
        settings={
            "batch": BATCH,
            "cases": [_label(shape, n) for shape, n in cases_to_run],
            "trunk": f"[Flatten]-Linear(obs,{HIDDEN})-Tanh-Linear({HIDDEN},{HIDDEN})-Tanh",
            "n_steps": N_STEPS,
            "rule": RULE,
            "baseline": 0.0,
            "extra warmup": warmup,
            "repeats": repeats,
        },
        reference="captum",
        focus="tdhook_rl",
        tolerance=TOLERANCE,
        cases=cases,
        notes=[
            "Contestants are built as in `multi_target_ig` (see its notes). `floor-jvp` runs"
            " only where the observation has fewer features than there are targets; elsewhere"
            " reverse mode (`floor`) is the cheaper floor.",
        ],
    )
