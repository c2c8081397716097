"""The double-pendulum report's "Which attributions to trust" section: a few methods measured
on a sample of the attribution rollout's steps, per head, against chance.

* ``deletion AUC``: the normalized deletion area of
  :func:`tdhook_rl.metrics.trust.grouped_curves` (features set to 0, the training data's mean
  observation, in order of ``|attribution|``; the curve of ``|f - f(all removed)|`` divided by
  its start); **below the random orderings' area: faithful**;
* ``infidelity``: captum's normalized infidelity (Gaussian noise, std 0.1 in standardized
  units, 16 draws), beside the same for the map shuffled over the features;
* ``randomization rho``: Spearman between the map and the map of the network with every layer
  re-initialized (:func:`~tdhook_rl.metrics.trust.randomized_network_correlation`); **high:
  the map ignores the weights** (it would look the same for an untrained network).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import (
    AttributionMethod,
    ExactShapley,
    FeatureAblation,
    InputXGradient,
    Saliency,
)
from tdhook_rl.metrics import infidelity
from tdhook_rl.metrics.trust import grouped_curves, randomized_network_correlation

__all__ = [
    "TRUST_SAMPLES",
    "deletion_curves_figure",
    "trust_methods",
    "trust_rows",
    "trust_section",
]

#: rollout steps measured (evenly spaced over the whole rollout)
TRUST_SAMPLES = 128


def trust_methods(method: AttributionMethod, name: str) -> dict[str, AttributionMethod]:
    """The report's own method first (``name (this report)``), then the cheap others.

    Examples:
        >>> list(trust_methods(Saliency(), "saliency"))
        ['saliency (this report)', 'input_x_gradient', 'feature_ablation', 'exact_shapley']
    """
    others: dict[str, AttributionMethod] = {
        "saliency": Saliency(),
        "input_x_gradient": InputXGradient(),
        "feature_ablation": FeatureAblation(),
        "exact_shapley": ExactShapley(),
    }
    return {f"{name} (this report)": method} | {k: v for k, v in others.items() if k != name}


def trust_rows(
    module: nn.Module,
    targets: dict[str, Any],
    batch: TensorDictBase,
    methods: dict[str, AttributionMethod],
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measures every method on ``batch`` (observations ``[N, F]``).

    Returns:
        ``(rows, curves)``: one row per method and head (``method``, ``head``, ``deletion``,
        ``deletion_random``, ``infidelity``, ``infidelity_random``, ``rho``), and the deletion
        curves (``{"fractions": [...], (method, head): [...], ("random", head): [...]}``).
    """
    rows: list[dict[str, Any]] = []
    curves: dict[Any, Any] = {}
    for name, method in methods.items():
        explained = Attributed(module, method, inputs=["observation"], targets=targets)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            td = explained(batch.clone())
        deleted = grouped_curves(explained, td, n_random=16, seed=seed)
        fidelity = infidelity(
            explained, td, n_perturb_samples=16, std=0.1, seed=seed, normalize=True
        )
        rho = randomized_network_correlation(explained, td, seed=seed)
        curves["fractions"] = deleted.fractions.tolist()
        for head in targets:
            curves[(name, head)] = deleted.curve[head].tolist()
            curves.setdefault(("random", head), deleted.random[head].tolist())
            rows.append(
                {
                    "method": name,
                    "head": head,
                    "deletion": float(deleted.auc[head]),
                    "deletion_random": float(deleted.random_auc[head]),
                    "infidelity": float(fidelity.infidelity[head].mean()),
                    "infidelity_random": float(fidelity.random[head].mean()),
                    "rho": float(rho[head].nanmean()),
                }
            )
    return rows, curves


def trust_section(
    report: Any,
    module: nn.Module,
    targets: dict[str, Any],
    rollout: TensorDictBase,
    method: AttributionMethod,
    method_name: str,
    summary: dict[str, Any],
    seed: int = 0,
) -> None:
    """Writes the section (table and deletion-curves figure) and fills ``summary["trust"]``."""
    start = time.perf_counter()
    noise = [h for h, flagged in summary.get("attribution_rounding_level", {}).items() if flagged]
    targets = {h: t for h, t in targets.items() if h not in noise}
    if not targets:
        report.section(
            "Which attributions to trust",
            "Not measured: every head's attributions are at the float-rounding level of its "
            "output (see above), so there is no ranking to test.",
        )
        summary["trust"] = {"samples": 0, "rows": [], "skipped": noise}
        return
    flat = rollout.reshape(-1)
    count = min(TRUST_SAMPLES, flat.shape[0])
    index = torch.linspace(0, flat.shape[0] - 1, count).round().long()
    batch = flat[index].select("observation").clone()
    rows, curves = trust_rows(module, targets, batch, trust_methods(method, method_name), seed)
    report.section(
        "Which attributions to trust",
        f"Each method's maps of both heads on {count} evenly spaced steps of the rollout, "
        "measured against chance. Deletion AUC: the features are set to the training data's "
        "mean in order of |attribution| and the head's distance to its all-removed value is "
        "followed (normalized to 1 at the start); lower than the random orderings' area = "
        "faithful (the ranking finds what moves the head first). Infidelity (captum's, "
        "normalized; Gaussian noise std 0.1 in standardized units, 16 draws): lower is "
        "better, read against the map shuffled over the features. Randomization rho: rank "
        "correlation of |map| with the map of the same network with every layer "
        "re-initialized; high = the map ignores the weights (it would look the same for an "
        "untrained network), near 0 = it depends on what was learned."
        + (
            f" {method_name} here integrates from its own baseline (see above), not from the "
            "mean that deletion removes features to: a ranking relative to another reference "
            "can fall slower than chance on this test."
            if hasattr(method, "baseline")
            else ""
        )
        + (
            f" Not measured: {', '.join(noise)} (attributions at the float-rounding level)."
            if noise
            else ""
        ),
    )
    report.table(
        [
            "method",
            "head",
            "deletion AUC",
            "random",
            "faithful?",
            "infidelity",
            "shuffled",
            "randomization rho",
        ],
        [
            [
                r["method"],
                r["head"],
                r["deletion"],
                r["deletion_random"],
                "yes" if r["deletion"] < r["deletion_random"] else "no",
                r["infidelity"],
                r["infidelity_random"],
                r["rho"],
            ]
            for r in rows
        ],
    )
    report.figure(
        deletion_curves_figure(curves, list(targets)),
        "deletion_curves",
        "Deletion curves: the head's distance to its value with every feature removed, "
        "normalized to 1 before any removal, as the top-ranked features are removed "
        "(x: fraction removed). A curve below the dashed random orderings falls faster than "
        "chance: that method's ranking is faithful; the lower its area, the better.",
    )
    summary["trust"] = {
        "samples": count,
        "rows": rows,
        "skipped": noise,
        "seconds": time.perf_counter() - start,
    }


def deletion_curves_figure(curves: dict[Any, Any], heads: list[str]) -> Any:
    """One panel per head: each method's normalized deletion curve, the random orderings'
    dashed (``curves`` as :func:`trust_rows` returns them)."""
    from tdhook_rl.viz._mpl import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(heads), figsize=(5.2 * len(heads), 3.8), squeeze=False)
    x = curves["fractions"]
    methods = list(dict.fromkeys(k[0] for k in curves if isinstance(k, tuple)))
    for ax, head in zip(axes[0], heads, strict=True):
        for name in methods:
            if name == "random":
                continue
            ax.plot(x, curves[(name, head)], marker=".", label=name)
        ax.plot(x, curves[("random", head)], "k--", label="random orderings")
        ax.set_title(f"{head}: deletion (lower is more faithful)")
        ax.set_xlabel("fraction of features removed (by |attribution|)")
        ax.set_ylabel("|f - f(all removed)|, normalized")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
