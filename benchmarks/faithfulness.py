"""Faithfulness of every attribution method on every shipped agent, with chance levels.

The double pendulum's rows are below; the board agents' (Connect Four, chess: squares as
feature groups) come from :mod:`benchmarks.faithfulness_boards`, whose ``BOARD_AGENTS`` is
the extension point for further agents (the pixel agent).

Data: a deterministic rollout of the shipped PPO agent (8 copies x 64 steps; ``--quick``: 4 x
32). Heads: the policy's action location (``ActionLoc()``) and the critic's ``state_value``,
attributed to the 9 standardized observation features. One case per head, one row per
method, and a ``random`` row: the chance level of each metric (random feature orderings,
random feature subsets, the attribution shuffled over features). Columns (means over the
rollout's steps):

* ``del AUC``: area under ``|f(x_k) - f(x)|`` as the top-k features are set to 0 (the
  observation's mean), k = 0..9 (larger: the ranking finds what matters);
* ``ins AUC``: area under ``|f(x_k) - f(x)|`` as they are restored from 0 (smaller: better);
* ``del nAUC`` / ``ins nAUC``: the normalized areas of
  :func:`tdhook_rl.metrics.trust.grouped_curves` (the curve of ``|f - f(end)|`` divided by
  its start; smaller than the ``random`` row: faithful), the one column every agent shares;
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

from benchmarks.faithfulness_boards import board_cases
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
    from tdhook_rl.metrics.trust import grouped_curves

    def auc(curve, start) -> torch.Tensor:  # area under |f(x_k) - f(x)| over k / F
        return torch.trapezoid((curve - start).abs(), x=deleted.fractions, dim=0).mean()

    deleted = deletion_curve(explained, td, n_random=16, seed=seed)
    inserted = insertion_curve(explained, td, n_random=16, seed=seed)
    fidelity = infidelity(explained, td, n_perturb_samples=16, std=0.1, seed=seed, normalize=True)
    gap = prediction_gap(explained, td, 3, std=0.5, n_samples=16, seed=seed)
    sens = sensitivity_max(explained, td, n_perturb_samples=8, perturb_radius=0.05, seed=seed)
    sanity = randomization_check(explained, td, seed=seed).mean()
    normalized = {
        mode: grouped_curves(explained, td, mode=mode, n_random=16, seed=seed)
        for mode in ("deletion", "insertion")
    }
    out: dict[str, dict[str, float]] = {"method": {}, "random": {}}
    for head in HEADS:
        start = deleted.values[head][0]
        final = inserted.values[head][-1]
        method = {
            "del AUC": auc(deleted.values[head], start),
            "ins AUC": auc(inserted.values[head], final),
            "del nAUC": normalized["deletion"].auc[head],
            "ins nAUC": normalized["insertion"].auc[head],
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
            "del nAUC": normalized["deletion"].random_auc[head],
            "ins nAUC": normalized["insertion"].random_auc[head],
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


def _data_randomization(agent, batch, targets, config: RunConfig) -> CaseResult:
    """Adebayo et al.'s data randomization, by distillation: a fresh MLP (9-64-64-2, tanh)
    regresses the policy's action location and the value on the rollout's states, and
    another from the same initial weights regresses them permuted across the states; ``rho
    data`` is each method's rank correlation between the two networks' maps (low: the map
    reflects what was learned), ``R2`` / ``R2 perm`` the two fits on the real targets."""
    import tdhook_rl as thr
    from tdhook_rl.metrics.data_randomization import compare_maps, distil
    from tdhook_rl.targets import per_sample

    states = batch["observation"].reshape(-1, batch["observation"].shape[-1])
    explained = thr.Attributed(
        agent.actor_critic, "saliency", inputs=["observation"], targets=targets
    )
    with torch.no_grad():
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        with set_exploration_type(ExplorationType.DETERMINISTIC):
            out = explained(batch.reshape(-1).clone())
        bound = explained.targets
        teacher = torch.stack(
            [per_sample(bound[h](out, out), out.batch_size, bound[h]) for h in HEADS], -1
        )
    teacher = teacher.reshape(states.shape[0], len(HEADS)).detach()
    scale = teacher.std(0).clamp_min(1e-6)  # both columns on one scale for the regression
    target = (teacher - teacher.mean(0)) / scale
    order = torch.randperm(states.shape[0], generator=torch.Generator().manual_seed(config.seed))

    def student() -> torch.nn.Module:
        n = states.shape[-1]
        return torch.nn.Sequential(
            torch.nn.Linear(n, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, len(HEADS)),
        )

    steps = 100 if config.quick else 400
    trained = distil(student, states, target, steps=steps, seed=config.seed)
    permuted = distil(student, states, target[order], steps=steps, seed=config.seed)
    with torch.no_grad():
        fits = [
            1 - (net(states) - target).square().sum(0) / (target - target.mean(0)).square().sum(0)
            for net in (trained, permuted)
        ]
    rows = []
    for name, method in _methods(config.quick).items():
        start = time.perf_counter()
        rho = compare_maps(trained, permuted, states, method, list(HEADS))
        seconds = time.perf_counter() - start
        row = ContestantResult(name, "ok", timing=Timing([seconds]))
        row.extras = {f"rho data {h}": float(rho[h].nanmean()) for h in HEADS}
        rows.append(row)
    fit = {f"R2 {h}": float(fits[0][i]) for i, h in enumerate(HEADS)}
    fit |= {f"R2 perm {h}": float(fits[1][i]) for i, h in enumerate(HEADS)}
    rows.append(ContestantResult("random", "ok", "the students' fits", extras=fit))
    return CaseResult(
        "double_pendulum data randomization",
        {"states": int(states.shape[0]), "adam_steps": steps},
        rows,
    )


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
        label = f"double_pendulum {head}"
        cases.append(CaseResult(label, {"batch": [envs, steps]}, [*rows[head], random_row]))
    cases.append(_data_randomization(agent, batch, targets, config))
    boards, notes = board_cases(config)
    cases += boards
    return BenchmarkResult(
        name=NAME,
        title="Faithfulness of every method on every shipped agent, against chance",
        description=(
            "Each method's attributions of each head, measured by tdhook_rl.metrics (see "
            "benchmarks/faithfulness.py and benchmarks/faithfulness_boards.py for the "
            "definitions and directions); the `random` row is each metric's chance level "
            "(random orderings, subsets or shuffled attributions, seeded). `del nAUC` / "
            "`ins nAUC` (every agent): normalized areas, smaller than `random` is faithful; "
            "`rho`: rank correlation with the map of a network with every layer "
            "re-initialized (near 0: the map depends on the weights; boards: over squares). "
            "Timing: one attribution pass over the rollout (boards: over the positions)."
        ),
        settings={
            "double_pendulum batch": f"{envs} copies x {steps} steps",
            "double_pendulum heads": "policy: ActionLoc(), value: state_value",
            "board heads": "move: ActionValue('logits', 'action'), value: state_value",
            "board groups": "squares (all planes of a square together), removed = 0",
            "seed": config.seed,
        },
        reference="random",
        tolerance=Tolerance(),
        cases=cases,
        notes=notes,
    )
