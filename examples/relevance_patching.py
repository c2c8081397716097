"""Relevance patching (RelP) next to attribution patching (AtP), both against exact activation
patching, on the shipped double-pendulum agent.

The batches are those of ``examples/attribution_patching.py``: clean = the first half of a
deterministic rollout, corrupted = its second half ("later steps") or the upright pendulum at
rest ("upright"); heads: the policy's ``loc`` and ``state_value``; sites: every ``Linear`` and
``Tanh``. RelP replaces AtP's gradient by LRP's propagation coefficient (relevance /
activation, :mod:`tdhook_rl.latent.relevance_patching`), here under the epsilon rule for a few
values of epsilon.

Reported per corruption and head: Spearman's correlation with the exact restored fractions over
the sites (``AtPResult.rank_correlation``: mostly ties, every site on a head's path restores
all of it), the largest error of the estimated restored fraction over the sites, and, for
each hidden layer, the correlation over its units between the mean
per-unit estimate and the exact effect of patching that unit alone (one forward per unit,
``unit_patching`` of the AtP example). The second is the informative one.

Run:  python examples/relevance_patching.py [--steps 100] [--out relp_results]
Writes: relp_results/relevance_patching.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.attribution.lrp import Composite, Epsilon
from tdhook_rl.latent.attribution_patching import AtPResult, spearman
from tdhook_rl.latent.relevance_patching import relevance_patching
from tdhook_rl.report.double_pendulum import hidden_layers

_ATP = Path(__file__).with_name("attribution_patching.py")
EPSILONS = (1e-6, 0.01, 0.1, 1.0)


def _atp_example() -> Any:
    """The AtP example as a module (its batches and its slow per-unit patching)."""
    spec = importlib.util.spec_from_file_location("attribution_patching_example", _ATP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def per_unit(estimate: AtPResult, slow: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Spearman over units, per layer and head, of the mean per-unit estimate and the exact."""
    units = estimate.units or {}
    out = {}
    for site, exact in slow.items():
        fast = units[site].flatten(1, -2).mean(1)[:, : exact.shape[-1]]  # (n_heads, units)
        out[site] = {h: _round(spearman(fast[j], exact[j])) for j, h in enumerate(estimate.heads)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="rollout steps")
    parser.add_argument("--envs", type=int, default=4, help="double-pendulum copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("relp_results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    atp_example = _atp_example()

    agent = agents.load("double_pendulum")
    module = agent.actor_critic
    env = agent.make_env(args.envs, seed=args.seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(args.steps, agent.actor, break_when_any_done=False)
    observation = rollout.select("observation")
    half = args.steps // 2
    clean = observation[:, :half]
    norm = agent.obs_norm
    upright = ((torch.tensor(atp_example.UPRIGHT) - norm["loc"]) / norm["scale"]).clamp(
        -norm["clip"], norm["clip"]
    )
    corruptions = {
        "later steps": observation[:, half : 2 * half],
        "upright": clean.clone().apply(lambda x: upright.expand_as(x).clone()),
    }
    labels = atp_example.pendulum_labels(agent)
    heads = {"policy": "loc", "value": "state_value"}
    sites = [thr.of_type(nn.Linear, nn.Tanh)]
    layers = [layer.path for layer in hidden_layers(agent)]
    summary: dict[str, Any] = {"batch": list(clean.batch_size), "corruptions": {}}
    for name, corrupted in corruptions.items():
        exact = thr.activation_patching(module, clean, corrupted, heads, sites)
        slow = {
            site: atp_example.unit_patching(module, clean, corrupted, heads, site, 1_000)
            for site in layers
        }
        methods = {
            "atp": thr.attribution_patching(module, clean, corrupted, heads, sites, per_unit=True)
        }
        for eps in EPSILONS:
            methods[f"relp eps={eps:g}"] = relevance_patching(
                module, clean, corrupted, heads, sites,
                composite=Composite({nn.Linear: Epsilon(eps)}), per_unit=True,
            )  # fmt: skip
        case = {}
        for method, result in methods.items():
            case[method] = {
                "spearman_over_sites": {
                    h: _round(r) for h, r in result.rank_correlation(exact).items()
                },
                "spearman_over_units": {
                    labels.get(s, s): v for s, v in per_unit(result, slow).items()
                },
                # how far the restored fractions are off, at the worst site (ranks hide it)
                "max_abs_error": {
                    h: _round(float((result.estimate[:, j] - exact.restored[:, j]).abs().max()))
                    for j, h in enumerate(result.heads)
                },
            }
        summary["corruptions"][name] = case
        print(f"double pendulum, {name} (clean {tuple(clean.batch_size)}):")
        for method, row in case.items():
            units = {
                layer: "/".join(f"{v}" for v in by_head.values())
                for layer, by_head in row["spearman_over_units"].items()
            }
            print(f"  {method:<14} over sites {row['spearman_over_sites']}  worst site error "
                  f"{row['max_abs_error']}\n{'':16} over units (policy/value) {units}")  # fmt: skip
    (args.out / "relevance_patching.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
