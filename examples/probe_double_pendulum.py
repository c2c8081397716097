"""Probe every hidden layer of the shipped double-pendulum agent for the physical state.

Records all hidden layers of the actor and the critic over rollouts (4 environment copies),
fits ridge probes for both hinge angles, both angular velocities, the cart position and the
pole tip height (labels from the MuJoCo simulator state), scores them by R^2 on held-out
episodes, and compares with the same probes on a randomly initialized copy of the network.

Run:  python examples/probe_double_pendulum.py [--steps 1000] [--out probe_results]
Writes: probe_results/probe_r2.png and probe_results/probe_r2.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents, viz
from tdhook_rl.probes import fit_probes, randomized_copy
from tdhook_rl.report.double_pendulum import LABELS, hidden_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per environment copy")
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("probe_results"))
    args = parser.parse_args()

    agent = agents.load("double_pendulum")
    module = agent.actor_critic
    sites = {f"actor h{i + 1}": s for i, s in enumerate(hidden_sites(module, "module.0"))}
    sites |= {f"critic h{i + 1}": s for i, s in enumerate(hidden_sites(module, "module.1"))}
    env = agent.make_env(args.envs, seed=args.seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(args.steps, thr.Recorded(module, sites), break_when_any_done=False)
        control = thr.Recorded(randomized_copy(module, seed=args.seed), sites)(
            rollout.exclude("activations").clone()
        )
    env.close()
    results = fit_probes(
        rollout, list(sites), LABELS, control=control, held_out=0.25, seed=args.seed
    )
    print(results)
    args.out.mkdir(parents=True, exist_ok=True)
    fig = viz.probe_scores(
        results.rows,
        score="r2",
        control="control_r2",
        title="Double pendulum: held-out R^2 of ridge probes",
    )
    fig.savefig(args.out / "probe_r2.png")
    results.to_json(args.out / "probe_r2.json")
    print(f"wrote {args.out / 'probe_r2.png'} and {args.out / 'probe_r2.json'}")


if __name__ == "__main__":
    main()
