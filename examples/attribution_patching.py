"""Attribution patching (AtP) against exact activation patching on the shipped agents.

For each agent, a clean batch and a corrupted one of the same shape:

- double pendulum (heads: the policy's ``loc``, ``state_value``): clean = the first half of a
  deterministic rollout; corrupted = its second half ("later steps"), or the upright state at
  rest for every sample ("upright");
- Connect Four (heads: the log-probability of the agent's clean move, ``state_value``): clean =
  the positions of half of a batch of games of random legal moves; corrupted = the other
  half's positions at the same ply (the clean legal-move mask kept, so the clean move keeps a
  finite log-probability).

Reported per agent, corruption and head: Spearman's correlation between AtP's restored
fractions and the exact ones over the sites (``AtPResult.rank_correlation``); per site, the
correlation over samples of the per-sample effects (``AtPResult.sample_correlation``); and, for
the hidden layers, the correlation over units of the mean per-unit effects, against a slow
loop patching one unit at a time. Where they disagree, the linear estimate fails: the
double-pendulum critic's second layer ("critic h2") has its 64 tanh units saturated, so the
gradient at and below its pre-activation nearly vanishes while patching still moves the value.

Run:  python examples/attribution_patching.py [--steps 100] [--games 32] [--out atp_results]
Writes: atp_results/attribution_patching.json and atp_<agent>.png (AtP vs exact, per sample)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, set_interaction_type
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.envs.connect_four import ConnectFourEnv
from tdhook_rl.latent.attribution_patching import spearman
from tdhook_rl.report.double_pendulum import hidden_layers
from tdhook_rl.report.pendulum_probes import layer_health
from tdhook_rl.targets import ActionLogProb, as_targets, per_sample
from tdhook_rl.viz import atp_vs_exact

# the upright pendulum at rest, in Gymnasium's raw observation (cos of both hinges 1)
UPRIGHT = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def unit_patching(module, clean, corrupted, heads, site: str, units: int) -> torch.Tensor:
    """``[n_heads, units]``: the exact mean effect of patching each of the first ``units``
    units of ``site`` alone (its clean value into the corrupted run), one forward pass per
    unit: the slow way."""
    targets = as_targets(heads, module, kind="head")
    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        reference = module(clean.copy())
        a_clean = thr.get(module, clean, site)
        assert isinstance(a_clean, torch.Tensor)  # one site, one tensor

        def run(td: TensorDictBase) -> torch.Tensor:
            return torch.stack(
                [per_sample(t(td, reference), td.batch_size, t) for t in targets.values()]
            )

        base = run(module(corrupted.copy()))
        effects = []
        for unit in range(min(units, a_clean.shape[-1])):

            def patch(a, td, unit=unit):
                a = a.clone()
                a[..., unit] = a_clean[..., unit]
                return a

            effects.append(
                (run(thr.set(module, corrupted, {site: patch})) - base).flatten(1).mean(1)
            )
    return torch.stack(effects, -1)


def compare(module, clean, corrupted, heads, sites, unit_sites, labels, units) -> dict[str, Any]:
    """Exact patching, AtP and their agreement for one agent and one corruption."""
    exact = thr.activation_patching(module, clean, corrupted, heads, sites)
    atp = thr.attribution_patching(module, clean, corrupted, heads, sites, per_unit=True)
    over_samples = atp.sample_correlation(exact)
    rows = [
        {
            "site": site,
            "name": labels.get(site, site),
            "head": head,
            "exact": _nan_to_none(float(exact.restored[i, j])),
            "atp": _nan_to_none(float(atp.estimate[i, j])),
            "spearman_over_samples": _nan_to_none(float(over_samples[i, j])),
        }
        for i, site in enumerate(atp.sites)
        for j, head in enumerate(atp.heads)
    ]
    by_unit = {}
    for site in unit_sites:
        slow = unit_patching(module, clean, corrupted, heads, site, units)
        # (n_heads, *batch, units) -> (n_heads, units)
        fast = (atp.units or {})[site].flatten(1, -2).mean(1)[:, : slow.shape[-1]]
        by_unit[labels.get(site, site)] = {
            head: _nan_to_none(spearman(fast[j], slow[j])) for j, head in enumerate(atp.heads)
        }
    return {
        "spearman_over_sites": {h: _nan_to_none(r) for h, r in atp.rank_correlation(exact).items()},
        "sites": rows,
        "spearman_over_units": by_unit,
        "_results": (atp, exact),
    }


def pendulum_labels(agent) -> dict[str, str]:
    """``{path: name}``: "critic h2" for a Tanh, "critic h2 pre" for the Linear before it."""
    labels = {}
    for layer in hidden_layers(agent):
        labels[layer.path] = layer.name
        parent, index = layer.path.rsplit(".", 1)
        labels[f"{parent}.{int(index) - 1}"] = f"{layer.name} pre"
    return labels


def double_pendulum(steps: int, envs: int, seed: int, units: int) -> dict[str, Any]:
    agent = agents.load("double_pendulum")
    module = agent.actor_critic
    env = agent.make_env(envs, seed=seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(steps, agent.actor, break_when_any_done=False)
    observation = rollout.select("observation")
    half = steps // 2
    clean = observation[:, :half]  # (envs, half): time-major within each env
    norm = agent.obs_norm
    upright = ((torch.tensor(UPRIGHT) - norm["loc"]) / norm["scale"]).clamp(
        -norm["clip"], norm["clip"]
    )
    corruptions = {
        "later steps": observation[:, half : 2 * half],
        "upright": clean.clone().apply(lambda x: upright.expand_as(x).clone()),
    }
    labels = pendulum_labels(agent)
    labels.update(
        {"module.0.module.0.module.0.4": "actor loc", "module.1.module.4": "critic value"}
    )
    sites = [thr.of_type(nn.Linear, nn.Tanh)]  # every layer (the scale module gives a tuple)
    unit_sites = [layer.path for layer in hidden_layers(agent)] + ["module.1.module.2"]
    health = {}
    for layer in hidden_layers(agent):
        recorded = thr.get(module, clean, layer.path)
        assert isinstance(recorded, torch.Tensor)
        health[layer.name] = layer_health(recorded, clean.batch_dims)
    heads = {"policy": "loc", "value": "state_value"}
    out = {
        name: compare(module, clean, corrupted, heads, sites, unit_sites, labels, units)
        for name, corrupted in corruptions.items()
    }
    return {
        "batch": list(clean.batch_size),
        "layer_health": health,
        "corruptions": out,
        "labels": labels,
    }


def connect_four(games: int, plies: int, seed: int, units: int) -> dict[str, Any]:
    module = agents.load("connect_four")
    torch.manual_seed(seed)
    env = ConnectFourEnv(batch_size=[games])
    env.set_seed(seed)
    with torch.no_grad():  # random legal moves: varied positions (the agent's games repeat)
        rollout = env.rollout(plies, break_when_any_done=False)
    # (games, plies) -> (games * plies,): the trunk's conv flattens the batch, which exact
    # patching (Recorded) refuses for a batch of two dimensions
    positions = rollout.select("observation", "action_mask")
    clean = positions[: games // 2].reshape(-1)
    corrupted = clean.clone()
    corrupted["observation"] = positions[games // 2 : 2 * (games // 2)]["observation"].flatten(0, 1)
    heads = {"move": ActionLogProb(), "value": "state_value"}
    labels = {
        "module.0.module.conv": "conv",
        "module.0.module.mlp.0": "trunk h1 pre",
        "module.0.module.mlp.1": "trunk h1",
        "module.0.module.mlp.2": "trunk h2 pre",
        "module.0.module.mlp.3": "trunk h2",
        "module.1.module.0.module": "policy logits",
        "module.2.module.mlp.0": "value h1 pre",
        "module.2.module.mlp.1": "value h1",
        "module.2.module.mlp.2": "win logits",
    }
    sites = None  # every leaf
    unit_sites = ["module.0.module.mlp.1", "module.0.module.mlp.3", "module.2.module.mlp.1"]
    result = compare(module, clean, corrupted, heads, sites, unit_sites, labels, units)
    return {
        "batch": list(clean.batch_size),
        "corruptions": {"other games": result},
        "labels": labels,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="double-pendulum rollout steps")
    parser.add_argument("--envs", type=int, default=4, help="double-pendulum copies")
    parser.add_argument("--games", type=int, default=32, help="Connect Four games")
    parser.add_argument("--plies", type=int, default=10, help="Connect Four plies per game")
    parser.add_argument(
        "--units", type=int, default=1_000, help="units per layer in the slow per-unit check"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("atp_results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    summary: dict[str, Any] = {
        "double_pendulum": double_pendulum(args.steps, args.envs, args.seed, args.units),
        "connect_four": connect_four(args.games, args.plies, args.seed, args.units),
    }
    for agent, result in summary.items():
        for corruption, case in result["corruptions"].items():
            atp, exact = case.pop("_results")
            print(f"{agent}, {corruption}: Spearman over sites {case['spearman_over_sites']}")
            for row in case["sites"]:
                print(
                    f"  {row['name']:<16} {row['head']:<7} exact {row['exact']!s:>8}  "
                    f"atp {row['atp']!s:>8}  rho over samples {row['spearman_over_samples']}"
                )
            print(f"  Spearman over units: {case['spearman_over_units']}")
            if corruption == next(iter(result["corruptions"])):
                fig = atp_vs_exact(
                    atp, exact, labels=result["labels"], title=f"{agent}: {corruption}"
                )
                fig.savefig(args.out / f"atp_{agent}.png")
    (args.out / "attribution_patching.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
