"""Integrated-gradients sweep over the number of targets and the observation size.

The actor-critic of ``multi_target_ig`` with a policy head sized to the number of targets
(``n - 1`` logits plus the value; a single target is the value alone) and observations of
9 features, 256 features, or an 8x8x12 board (flattened by the trunk). Batch 64,
50 Gauss-Legendre steps, zero baseline.
"""

from __future__ import annotations

from benchmarks.harness import BenchmarkResult, CaseResult, RunConfig
from benchmarks.ig_contestants import TOLERANCE, run_ig_case
from benchmarks.models import actor_critic, observations

NAME = "ig_sweep"
CONTESTANTS = ("captum", "tdhook", "floor", "tdhook_rl")
BATCH = 64
HIDDEN = 256
N_STEPS = 50
RULE = "gausslegendre"
TARGETS = (1, 2, 17, 64)
OBS_SHAPES: tuple[tuple[int, ...], ...] = ((9,), (256,), (8, 8, 12))
QUICK_TARGETS = (1, 17, 64)
QUICK_OBS_SHAPES: tuple[tuple[int, ...], ...] = ((9,), (8, 8, 12))


def run(config: RunConfig) -> BenchmarkResult:
    """Run the sweep; ``config.quick`` uses a reduced grid and fewer repeats."""
    if config.quick:
        targets, shapes, warmup, repeats = QUICK_TARGETS, QUICK_OBS_SHAPES, 1, 3
    else:
        targets, shapes, warmup, repeats = TARGETS, OBS_SHAPES, 1, 7
    cases: list[CaseResult] = []
    for shape in shapes:
        obs = observations(BATCH, shape, seed=config.seed + 1, device=config.device)
        for n_targets in targets:
            n_logits = max(n_targets - 1, 1)
            net = actor_critic(shape, n_logits, HIDDEN, seed=config.seed, device=config.device)
            # columns of cat(logits, value): the first n - 1 logits, then the value
            columns = [*range(n_targets - 1), n_logits]
            label = f"T={n_targets}, obs={'x'.join(map(str, shape))}"
            cases.append(
                run_ig_case(label, net, obs, columns, CONTESTANTS, N_STEPS, RULE, warmup, repeats)
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
            "targets": targets,
            "obs_shapes": ["x".join(map(str, s)) for s in shapes],
            "trunk": f"[Flatten]-Linear(obs,{HIDDEN})-Tanh-Linear({HIDDEN},{HIDDEN})-Tanh",
            "n_steps": N_STEPS,
            "rule": RULE,
            "baseline": 0.0,
            "warmup": warmup,
            "repeats": repeats,
        },
        reference="captum",
        tolerance=TOLERANCE,
        cases=cases,
        notes=["Contestants are built as in `multi_target_ig` (see its notes)."],
    )
