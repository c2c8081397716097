"""Plots for probes (score by layer and label) and interventions (effect with intervals)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tdhook_rl.viz._mpl import pyplot


def probe_scores(
    rows: Sequence[Mapping[str, Any]],
    *,
    score: str = "score",
    control: str | None = "control_score",
    title: str | None = None,
) -> Any:
    """Held-out probe score by layer (x) for each label (one line each), with the
    random-network control dashed when present.

    Args:
        rows: one mapping per (site, label) with keys ``"site"``, ``"label"``, ``score`` and
            optionally ``control`` (e.g. ``ProbeResults.rows``), sites in layer order.
        score, control: the keys of the score and of the control's score.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    if not rows:
        raise ValueError("no probe results to plot")
    sites = list(dict.fromkeys(r["site"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    table = {(r["site"], r["label"]): r for r in rows}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(sites)), 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    floor = -0.5  # very negative held-out scores (worse than the mean) are drawn at the floor

    def clipped(values: list[float]) -> list[float]:
        return [max(v, floor) if v == v else v for v in values]

    for i, label in enumerate(labels):
        color = colors[i % len(colors)]
        ys = clipped([table.get((s, label), {}).get(score, float("nan")) for s in sites])
        ax.plot(range(len(sites)), ys, marker="o", color=color, label=label)
        if control is not None and any(control in table.get((s, label), {}) for s in sites):
            cs = clipped([table.get((s, label), {}).get(control, float("nan")) for s in sites])
            ax.plot(range(len(sites)), cs, ls="--", marker="x", color=color, alpha=0.6)
    ax.set_xticks(range(len(sites)), sites, rotation=20, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"held-out {score} (floor {floor})")
    ax.set_ylim(floor - 0.05, 1.05)
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(title="label (dashed: random network)", fontsize=9)
    ax.set_title(title or "What the hidden layers encode")
    return fig


def intervention_effects(
    effects: Mapping[str, Any], *, metric: str = "returns", title: str | None = None
) -> Any:
    """Horizontal bars of each intervention's mean paired change in ``metric``, with its
    confidence interval.

    Args:
        effects: ``{name: InterventionEffect}`` (see
            :func:`tdhook_rl.evaluate.intervention_effect`) or
            ``{name: {"change": ..., "low": ..., "high": ...}}``.
        metric: ``"returns"``, ``"lengths"``, ``"action_mean"`` or ``"action_std"``.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    if not effects:
        raise ValueError("no intervention effects to plot")
    names, change, low, high = [], [], [], []
    for name, effect in effects.items():
        s = effect.summary[metric] if hasattr(effect, "summary") else effect
        names.append(name)
        change.append(s["change"])
        low.append(s["change"] - s["low"])
        high.append(s["high"] - s["change"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    colors = ["tab:red" if c < 0 else "tab:blue" for c in change]
    ax.barh(range(len(names)), change, xerr=[low, high], color=colors, capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"change in {metric.replace('_', ' ')} (intervened - clean)")
    ax.set_title(title or "Effect of each intervention")
    return fig
