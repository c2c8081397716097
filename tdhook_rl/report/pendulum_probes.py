"""The double-pendulum report's probe section: selectivity, not decodability.

A ridge probe that reads the cart position from a hidden layer says little when the same
probe reads it as well from a randomly initialized network, or straight from the
observation. The section fits every probe on several episode splits, and reports per layer and
label the held-out R^2, the random network's, their difference (the selectivity, mean and
spread over the splits) and the observation's own R^2; it names layers whose units are
saturated or dead, and states how much the value head varies at all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from tdhook_rl.latent.probes import fit_probes, randomized_copy
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.latent.splits import episode_split

__all__ = [
    "DECODABLE_R2",
    "OBSERVATION_SITE",
    "SATURATION",
    "layer_health",
    "probe_headline",
    "probe_section",
    "selective_rows",
    "selectivity_rows",
]

#: A label the observation decodes with at least this held-out R^2 is "in the observation".
DECODABLE_R2 = 0.9
#: A tanh unit is saturated when ``|a| > SATURATION[0]`` on more than ``SATURATION[1]`` of steps.
SATURATION = (0.99, 0.99)
OBSERVATION_SITE = "observation (no network)"
MAX_SPLITS = 8


def distinct_splits(data: TensorDictBase, held_out: float, seed: int, n: int) -> list[int]:
    """Up to ``n`` seeds from ``seed`` on whose episode splits hold out different episodes."""
    seeds, seen = [], set()
    for s in range(seed, seed + 16 * n):
        test = episode_split(data, held_out, s)[1]
        key = test.flatten().to(torch.uint8).cpu().numpy().tobytes()
        if key not in seen:
            seen.add(key)
            seeds.append(s)
        if len(seeds) == n:
            break
    return seeds


def selectivity_rows(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Aggregates :func:`~tdhook_rl.probes.fit_probes` rows of several splits per
    ``(site, label)``: mean and standard deviation of ``r2``, ``control_r2`` and their
    difference ``selectivity`` (the spread over splits is their uncertainty).

    Examples:
        >>> runs = [[{"site": "h", "label": "x", "r2": 0.9, "control_r2": 0.5}],
        ...         [{"site": "h", "label": "x", "r2": 0.7, "control_r2": 0.5}]]
        >>> row = selectivity_rows(runs)[0]
        >>> round(row["selectivity"], 3), round(row["selectivity_sd"], 3), row["splits"]
        (0.3, 0.141, 2)
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            grouped.setdefault((row["site"], row["label"]), []).append(row)
    out = []
    for (site, label), rows in grouped.items():
        entry: dict[str, Any] = {"site": site, "label": label, "splits": len(rows)}
        columns = {
            "r2": [r["r2"] for r in rows],
            "control_r2": [r["control_r2"] for r in rows if r.get("control_r2") is not None],
        }
        if len(columns["control_r2"]) == len(rows):
            columns["selectivity"] = [r["r2"] - r["control_r2"] for r in rows]
        for name, values in columns.items():
            if values:
                entry[name], entry[f"{name}_sd"] = _mean_sd(values)
        for extra in ("units", "near_constant_units"):
            if extra in rows[0]:
                entry[extra] = rows[0][extra]
        out.append(entry)
    return out


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var)


def layer_health(activations: torch.Tensor, batch_dims: int) -> dict[str, int]:
    """Units of a recorded layer ``(*batch, units)`` that are saturated (tanh-like:
    ``|a| > 0.99`` on more than 99% of steps) or dead (standard deviation below 1e-3).

    Examples:
        >>> a = torch.cat([torch.full((50, 2), 0.999), torch.randn(50, 3)], -1)
        >>> layer_health(a, 1)
        {'units': 5, 'saturated': 2, 'dead': 2}
    """
    flat = activations.detach().float().reshape(-1, activations[(0,) * batch_dims].numel())
    level, fraction = SATURATION
    saturated = (flat.abs() > level).float().mean(0) > fraction
    dead = flat.std(0, correction=0) < 1e-3
    return {"units": flat.shape[1], "saturated": int(saturated.sum()), "dead": int(dead.sum())}


def probe_section(
    report: Any,
    rollout: TensorDictBase,
    module: nn.Module,
    names: Mapping[str, str],
    labels: Mapping[str, Any],
    summary: dict[str, Any],
    seed: int,
    held_out: float = 0.25,
) -> None:
    """Writes the probe section and fills ``summary["probes"]`` (one row per layer and label
    with selectivity and its spread), ``summary["observation_probes"]``,
    ``summary["layer_health"]``, ``summary["value_range"]`` and
    ``summary["probe_headline"]``."""
    from tdhook_rl.viz import probe_scores

    with warnings.catch_warnings():
        # the policy's state-independent scale is a bare parameter: it keeps its value
        warnings.filterwarnings("ignore", message="randomized_copy: no reset_parameters")
        control_net = Recorded(randomized_copy(module, seed=seed), {n: s for s, n in names.items()})
    with torch.no_grad():
        control = control_net(rollout.exclude("activations").clone())
    sites = list(names.values())
    data = rollout.clone(False)
    data["activations", OBSERVATION_SITE] = rollout["observation"]
    seeds = distinct_splits(rollout, held_out, seed, MAX_SPLITS)
    runs, observation_runs = [], []
    for s in seeds:
        runs.append(
            fit_probes(data, sites, labels, control=control, held_out=held_out, seed=s).rows
        )
        observation_runs.append(
            fit_probes(data, [OBSERVATION_SITE], labels, held_out=held_out, seed=s).rows
        )
    rows = selectivity_rows(runs)
    in_observation = {r["label"]: r["r2"] for r in selectivity_rows(observation_runs)}
    health = {
        site: layer_health(rollout["activations", site], rollout.batch_dims) for site in sites
    }
    values = rollout["state_value"].detach().float()
    value_range = {"min": float(values.min()), "max": float(values.max())}
    headline = _headline(rows, health)
    report.section(
        "Probes: what the hidden layers encode beyond a random network",
        f"Ridge probes from each hidden layer to the simulator state, scored by held-out R^2 "
        f"on {len(seeds)} splits that each hold out different episodes (mean and spread "
        "over the splits). Decodability alone says little: most of these labels are nearly "
        "linear in the observation, and a randomly initialized copy of the network keeps "
        "them. The selectivity is the trained network's R^2 minus the random network's; the "
        "last column is the R^2 of the same probe on the observation itself.",
    )
    report.paragraph(headline)
    _health_paragraphs(report, health, value_range)
    report.figure(
        probe_scores(rows, score="r2", control="control_r2"),
        "probe_r2",
        "Held-out R^2 by layer and label (mean over splits; dashed: the random network).",
    )
    report.table(
        ["layer", "label", "R^2", "random-network R^2", "selectivity", "observation R^2", "note"],
        [
            [
                r["site"],
                r["label"],
                _pm(r["r2"], r["r2_sd"]),
                _pm(r.get("control_r2"), r.get("control_r2_sd")),
                _pm(r.get("selectivity"), r.get("selectivity_sd")),
                in_observation.get(r["label"]),
                _note(r, health[r["site"]], in_observation.get(r["label"])),
            ]
            for r in rows
        ],
    )
    for r in rows:
        r["in_observation"] = in_observation.get(r["label"], math.nan) >= DECODABLE_R2
    summary["probes"] = rows
    summary["probe_splits"] = len(seeds)
    summary["observation_probes"] = in_observation
    summary["layer_health"] = health
    summary["value_range"] = value_range
    summary["probe_headline"] = headline


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def _note(row: dict[str, Any], health: dict[str, int], observation_r2: float | None) -> str:
    notes = []
    if health["saturated"] + health["dead"] >= health["units"]:
        notes.append("every unit saturated or dead")
    elif row.get("near_constant_units"):
        notes.append(f"{row['near_constant_units']} near-constant units dropped")
    if observation_r2 is not None and observation_r2 >= DECODABLE_R2:
        notes.append("linear in the observation")
    return "; ".join(notes)


def selective_rows(
    rows: Sequence[dict[str, Any]], health: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    """Rows whose selectivity exceeds twice its spread over splits, outside saturated layers."""
    return [
        r
        for r in rows
        if "selectivity" in r
        and r["selectivity"] > 2 * r["selectivity_sd"]
        and health[r["site"]]["saturated"] < health[r["site"]]["units"]
    ]


def _headline(rows: list[dict[str, Any]], health: dict[str, dict[str, int]]) -> str:
    clear = selective_rows(rows, health)
    if not clear:
        return (
            "No probe beats the random network by more than twice its spread over the "
            "splits: what the probes read is as decodable from an untrained network."
        )
    best = max(clear, key=lambda r: r["selectivity"])
    return (
        f"Most selective: {best['label']} from {best['site']}, R^2 {best['r2']:.2f} against "
        f"{best['control_r2']:.2f} for the random network (selectivity "
        f"{best['selectivity']:+.2f} ± {best['selectivity_sd']:.2f} over {best['splits']} "
        "splits)."
    )


def _health_paragraphs(report: Any, health: dict[str, dict[str, int]], value_range: dict) -> None:
    for site, h in health.items():
        if h["saturated"] or h["dead"]:
            report.paragraph(
                f"{site}: {h['saturated']} of {h['units']} units saturated (|a| > "
                f"{SATURATION[0]} on more than {SATURATION[1]:.0%} of steps) and {h['dead']} "
                "dead (std < 1e-3). Probes drop near-constant units instead of blowing them "
                "up, so this layer's R^2 says only that nothing varies there."
            )
    spread = value_range["max"] - value_range["min"]
    mid = max(abs(value_range["max"]), abs(value_range["min"]), 1e-12)
    report.paragraph(
        f"The value head ranges from {value_range['min']:.3f} to {value_range['max']:.3f} over "
        f"the rollout ({spread:.3g}, {100 * spread / mid:.2g}% of its size)"
        + (
            ": nearly constant, so the critic's last layers have little to encode."
            if spread < 0.01 * mid
            else "."
        )
    )


def probe_headline(summary: dict[str, Any]) -> str:
    """The summary line's words on probes."""
    clear = selective_rows(summary.get("probes") or [], summary.get("layer_health", {}))
    if not clear:
        return "no probe more selective than a random network"
    best = max(clear, key=lambda r: r["selectivity"])
    return (
        f"most selective probe {best['label']} from {best['site']} "
        f"(R^2 {best['r2']:.2f} vs random {best['control_r2']:.2f})"
    )
