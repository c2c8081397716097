"""The double-pendulum report's ablation section: which units the behaviour depends on.

Each group of hidden units of the actor (contiguous blocks, or each unit alone) is replaced
by zero and by its mean over the attribution rollout (mean ablation keeps the layer's typical
input to the next one, so it isolates what the units' *variation* carries), in paired
episodes from the same seeds with and without the ablation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tensordict import TensorDictBase
from tqdm.auto import tqdm

from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.interventions import Ablate, Intervention

__all__ = ["ABLATION_UNITS", "ABLATION_VALUES", "ablation_jobs", "ablation_section"]

ABLATION_VALUES = ("zero", "mean")
ABLATION_UNITS = ("groups", "each")


def ablation_jobs(
    widths: Mapping[str, int], groups: int, units: str
) -> list[tuple[str, str, list[int]]]:
    """``(label, site, units)`` for every ablation: ``groups`` contiguous blocks per layer, or
    each unit alone (``units="each"``).

    Examples:
        >>> ablation_jobs({"actor h1": 4}, 2, "groups")
        [('actor h1 units 0-1', 'actor h1', [0, 1]), ('actor h1 units 2-3', 'actor h1', [2, 3])]
        >>> [label for label, *_ in ablation_jobs({"h": 2}, 1, "each")]
        ['h unit 0', 'h unit 1']
    """
    if units not in ABLATION_UNITS:
        raise ValueError(f"ablation units must be one of {list(ABLATION_UNITS)}, got {units!r}")
    jobs = []
    for name, width in widths.items():
        if units == "each":
            jobs += [(f"{name} unit {u}", name, [u]) for u in range(width)]
            continue
        size = max(1, width // groups)
        for g in range(0, width, size):
            block = list(range(g, min(g + size, width)))
            jobs.append((f"{name} units {block[0]}-{block[-1]}", name, block))
    return jobs


def ablation_section(
    report: Any,
    agent: Any,
    rollout: TensorDictBase,
    layers: Sequence[Any],
    summary: dict[str, Any],
    opts: Any,
    progress: bool,
) -> None:
    """Writes the section and fills ``summary["ablations"]`` (one row per ablation and
    value: name, value, clean, ablated, change and its bootstrap interval, episodes)."""
    from tdhook_rl.viz import intervention_effects

    values = list(ABLATION_VALUES) if opts.ablation_value == "both" else [opts.ablation_value]
    # the actor's own layers (a shared trunk included), by their path in the actor
    by_name = {layer.name: layer.actor_path for layer in layers if layer.actor_path is not None}
    widths = {name: rollout["activations", name].shape[-1] for name in by_name}
    jobs = ablation_jobs(widths, opts.groups, opts.ablation_units)
    report.section(
        "Ablations: which units the behaviour depends on",
        f"Each {'unit' if opts.ablation_units == 'each' else 'group'} of "
        f"hidden units of the actor replaced by {' and by '.join(_value_text(v) for v in values)}"
        f"; n = {opts.episodes} paired episodes of up to {opts.ablation_steps} steps from the "
        "same seeds with and without the ablation; bars: mean change in return with 95% "
        "bootstrap intervals over the episodes.",
    )
    env = agent.make_env(opts.episodes, seed=opts.seed, device=opts.device)
    effects, rows = {}, []
    work = [(label, site, units, v) for label, site, units in jobs for v in values]
    for label, name, units, value in tqdm(
        work, desc="ablations", disable=not progress, leave=False
    ):
        ablate: Intervention = Ablate(units=units)
        if value == "mean":
            acts = rollout["activations", name]
            ablate = Ablate.from_mean(acts, units=units, batch_dims=rollout.batch_dims)
            ablate = ablate.to(opts.device)
        effect = intervention_effect(
            env,
            agent.actor,
            {by_name[name]: ablate},
            episodes=opts.episodes,
            seed=opts.seed,
            max_steps=opts.ablation_steps,
        )
        key = f"{label} ({value})"
        effects[key] = effect
        s = effect.summary["returns"]
        rows.append([key, value, s["clean"], s["intervened"], s["change"], s["low"], s["high"]])
    env.close()
    report.figure(
        intervention_effects(effects),
        "ablation_effects",
        f"Change in return per ablation (n = {opts.episodes} paired episodes each).",
    )
    report.table(
        ["ablation", "value", "clean return", "ablated return", "change", "95% low", "95% high"],
        rows,
    )
    fields = ["name", "value", "clean", "ablated", "change", "low", "high"]
    summary["ablations"] = [
        dict(zip(fields, r, strict=True)) | {"episodes": opts.episodes} for r in rows
    ]


def _value_text(value: str) -> str:
    return "zero" if value == "zero" else "its mean over the attribution rollout"
