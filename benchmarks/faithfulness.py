"""Faithfulness of every attribution method on the shipped double pendulum, with chance levels.

Data: a deterministic rollout of the shipped PPO agent (8 copies x 64 steps; ``--quick``: 4 x
32). Heads: the policy's action location (``ActionLoc()``) and the critic's ``state_value``,
attributed to the 9 standardized observation features. One case per head, one row per
method, and a ``random`` row: the chance level of each metric (random feature orderings,
random feature subsets, the attribution shuffled over features). Columns (means over the
rollout's steps):

* ``del AUC``: area under ``|f(x_k) - f(x)|`` as the top-k features are set to 0 (the
  observation's mean), k = 0..9 (larger: the ranking finds what matters);
* ``ins AUC``: area under ``|f(x_k) - f(x)|`` as they are restored from 0 (smaller: better);
* ``infid``: captum's normalized infidelity, Gaussian ``I`` with std 0.1, 16 draws (smaller);
  ``infid rand``: the same for the method's attribution shuffled over the features;
* ``PGI`` / ``PGU``: the mean ``|change|`` after ``N(0, 0.5^2)`` noise on the top-3 /
  bottom-3 features, 16 draws (PGI larger, PGU smaller than chance);
* ``sens``: captum's max-sensitivity, radius 0.05, 8 draws (smaller: more stable);
* ``rho``: Spearman between the map and the map of a network with every layer re-initialized
  (cascading randomization's last step; near 0: the map depends on the weights);
* ``ret k=0/1/3`` (policy only, not with ``--quick``): the mean return over 100 steps (4
  episodes per k) with the top-k features (by mean |attribution| over the rollout) set to 0 in
  the observation the policy sees, for whole episodes (smaller: the ranking found what the
  policy needs; the ``random`` row: 4 random orderings).

The timing columns time one attribution pass of the method over the whole rollout.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.harness import (
    BenchmarkResult,
    CaseResult,
    ContestantResult,
    RunConfig,
    Timing,
    Tolerance,
)

NAME = "faithfulness"
HEADS = ("policy", "value")


def _methods(quick: bool) -> dict[str, Any]:
    from tdhook_rl.attribution import (
        ExactShapley,
        FeatureAblation,
        InputXGradient,
        IntegratedGradients,
        KernelShap,
        Lime,
        Saliency,
        ShapleyValueSampling,
        SmoothGrad,
    )

    methods = {
        "saliency": Saliency(),
        "input_x_gradient": InputXGradient(),
        "ig": IntegratedGradients(n_steps=32),
        "smoothgrad": SmoothGrad(Saliency(), n_samples=16, stdev=0.1),
        "feature_ablation": FeatureAblation(),
        "exact_shapley": ExactShapley(),
        "shapley_sampling": ShapleyValueSampling(n_samples=16),
        "kernel_shap": KernelShap(n_samples=128),
        "lime": Lime(n_samples=128),
    }
    if quick:
        methods = {k: methods[k] for k in ("saliency", "ig", "feature_ablation", "exact_shapley")}
    return methods


def _scores(explained, td, closed_loop, agent, seed, device) -> dict[str, dict[str, float]]:
    from tdhook_rl.metrics import (
        closed_loop_deletion,
        deletion_curve,
        infidelity,
        insertion_curve,
        mean_abs_attribution,
        prediction_gap,
        randomization_check,
        sensitivity_max,
    )

    def auc(curve, start) -> torch.Tensor:  # area under |f(x_k) - f(x)| over k / F
        return torch.trapezoid((curve - start).abs(), x=deleted.fractions, dim=0).mean()

    deleted = deletion_curve(explained, td, n_random=16, seed=seed)
    inserted = insertion_curve(explained, td, n_random=16, seed=seed)
    fidelity = infidelity(explained, td, n_perturb_samples=16, std=0.1, seed=seed, normalize=True)
    gap = prediction_gap(explained, td, 3, std=0.5, n_samples=16, seed=seed)
    sens = sensitivity_max(explained, td, n_perturb_samples=8, perturb_radius=0.05, seed=seed)
    sanity = randomization_check(explained, td, seed=seed).mean()
    out: dict[str, dict[str, float]] = {"method": {}, "random": {}}
    for head in HEADS:
        start = deleted.values[head][0]
        final = inserted.values[head][-1]
        method = {
            "del AUC": auc(deleted.values[head], start),
            "ins AUC": auc(inserted.values[head], final),
            "infid": fidelity.infidelity[head].mean(),
            "infid rand": fidelity.random[head].mean(),
            "PGI": gap.pgi[head].mean(),
            "PGU": gap.pgu[head].mean(),
            "sens": sens.sensitivity[head].mean(),
            "rho": sanity[head][-1],
        }
        chance = {
            "del AUC": auc(deleted.random[head], start),
            "ins AUC": auc(inserted.random[head], final),
            "PGI": gap.random[head].mean(),
            "PGU": gap.random[head].mean(),
        }
        if closed_loop and head == "policy":
            scores = mean_abs_attribution(td, head)
            loop = closed_loop_deletion(
                lambda n: agent.make_env(n, seed=seed, device=device),
                agent.actor,
                scores,
                ks=[0, 1, 3],
                episodes=4,
                max_steps=100,
                n_random=4,
                seed=seed,
            )
            for i, k in enumerate(loop.ks.tolist()):
                method[f"ret k={k}"] = loop.returns[i]
                chance[f"ret k={k}"] = loop.random[i]
        out[f"method {head}"] = {k: float(v) for k, v in method.items()}
        out[f"random {head}"] = {k: float(v) for k, v in chance.items()}
    return out


def run(config: RunConfig) -> BenchmarkResult:
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    import tdhook_rl as thr
    from tdhook_rl import agents
    from tdhook_rl.targets import ActionLoc

    envs, steps = (4, 32) if config.quick else (8, 64)
    device = config.device
    agent = agents.load("double_pendulum", device=str(device))
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = agent.make_env(envs, seed=config.seed, device=device).rollout(
            steps, agent.actor, break_when_any_done=False
        )
    batch = rollout.select("observation").clone()  # (envs, steps)
    targets = {"policy": ActionLoc(), "value": "state_value"}
    rows: dict[str, list[ContestantResult]] = {head: [] for head in HEADS}
    chance: dict[str, dict[str, float]] = {}
    for name, method in _methods(config.quick).items():
        explained = thr.Attributed(
            agent.actor_critic, method, inputs=["observation"], targets=targets
        )
        try:
            explained(batch.clone())  # warm-up
            start = time.perf_counter()
            td = explained(batch.clone())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            scores = _scores(explained, td, not config.quick, agent, config.seed, device)
        except Exception as err:  # reported in the table
            for head in HEADS:
                rows[head].append(ContestantResult(name, "error", f"{type(err).__name__}: {err}"))
            continue
        for head in HEADS:
            row = ContestantResult(name, "ok", timing=Timing([seconds]))
            row.extras = scores[f"method {head}"]
            rows[head].append(row)
            chance.setdefault(head, scores[f"random {head}"])
    cases = []
    for head in HEADS:
        random_row = ContestantResult("random", "ok", "chance level", extras=chance.get(head, {}))
        cases.append(CaseResult(head, {"batch": [envs, steps]}, [*rows[head], random_row]))
    return BenchmarkResult(
        name=NAME,
        title="Faithfulness of every method (double pendulum), against chance",
        description=(
            "Each method's attributions of the policy's action location and of the value, "
            "measured by tdhook_rl.metrics (see benchmarks/faithfulness.py for the definitions "
            "and directions); the `random` row is each metric's chance level (random "
            "orderings, subsets or shuffled attributions, seeded). Timing: one attribution "
            "pass over the rollout."
        ),
        settings={
            "batch": f"{envs} copies x {steps} steps",
            "heads": "policy: ActionLoc(), value: state_value",
            "seed": config.seed,
        },
        reference="random",
        tolerance=Tolerance(),
        cases=cases,
    )
