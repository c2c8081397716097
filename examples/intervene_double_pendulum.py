"""Ablate and steer the shipped double-pendulum agent, and measure what it does to behaviour.

1. Ablation sweep: each group of hidden units of the actor is set to zero; paired episodes
   from the same seeds with and without the ablation show which groups topple the pendulum
   (return drop, with 95% bootstrap intervals).
2. Steering: a vector built as the difference of mean first-layer activations between states
   where pole 1 leans one way (hinge-1 angle > 0) and the other (< 0) is added with several
   scales; the mean action and the return move with it.

Run:  python examples/intervene_double_pendulum.py [--episodes 4] [--out intervention_results]
Writes: intervention_results/interventions.png and interventions.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.interventions import Ablate, Steer, steering_vector
from tdhook_rl.viz._mpl import pyplot

H1, H2 = "module.0.module.0.1", "module.0.module.0.3"  # the actor's two Tanh layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--groups", type=int, default=4, help="unit groups per layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("intervention_results"))
    args = parser.parse_args()

    agent = agents.load("double_pendulum")
    actor = agent.actor
    env = agent.make_env(args.episodes, seed=args.seed)  # one copy per paired episode
    width = actor.module[0].module[0][0].out_features
    size = width // args.groups
    ablations = {}
    for layer, site in (("h1", H1), ("h2", H2)):
        for g in range(0, width, size):
            name = f"{layer} units {g}-{g + size - 1}"
            ablations[name] = intervention_effect(
                env,
                actor,
                {site: Ablate(units=range(g, g + size))},
                episodes=args.episodes,
                seed=args.seed,
                max_steps=args.max_steps,
            )
            change = ablations[name].summary["returns"]["change"]
            print(f"ablate {name:<16} return change {change:+9.1f}")

    # steering vector: pole 1 leaning one way vs the other
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(
            args.max_steps, thr.Recorded(actor, {"h1": H1}), break_when_any_done=False
        )
    angle = rollout["qpos"][..., 1]
    h1 = rollout["activations", "h1"]
    vector = steering_vector(h1[angle > 0], h1[angle < 0])
    # the pole hardly leans under a good controller, so the vector is short: scale it up
    scales = [-40.0, -20.0, -10.0, 0.0, 10.0, 20.0, 40.0]
    states = rollout.select("observation").reshape(-1)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        clean_action = actor(states.clone())["action"]
    steering = {}
    for scale in scales:
        steer = {H1: Steer(vector, scale=scale)}
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            shift = float((thr.set(actor, states, steer)["action"] - clean_action).mean())
        effect = intervention_effect(
            env, actor, steer, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps
        )
        steering[scale] = {**effect.summary, "open_loop_action_shift": shift}
        print(
            f"steer x{scale:+.0f} (|v| = {float(vector.norm()):.3f}): action shift on recorded "
            f"states {shift:+.3f}, return {effect.summary['returns']['intervened']:9.1f}"
        )
    env.close()

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(ablations)
    change = [ablations[n].summary["returns"]["change"] for n in names]
    low = [c - ablations[n].summary["returns"]["low"] for c, n in zip(change, names, strict=True)]
    high = [ablations[n].summary["returns"]["high"] - c for c, n in zip(change, names, strict=True)]
    left.barh(
        range(len(names)),
        change,
        xerr=[low, high],
        capsize=3,
        color=["tab:red" if c < 0 else "tab:blue" for c in change],
    )
    left.set_yticks(range(len(names)), names)
    left.invert_yaxis()
    left.axvline(0, color="black", lw=0.8)
    left.set_xlabel("change in return (ablated - clean)")
    left.set_title("Ablating unit groups of the actor")
    right.plot(
        scales,
        [steering[s]["open_loop_action_shift"] for s in scales],
        "o-",
        label="action shift",
    )
    right.set_xlabel("steering scale (pole leans + minus pole leans -)")
    right.set_ylabel("mean action shift on recorded states")
    twin = right.twinx()
    twin.plot(
        scales,
        [steering[s]["returns"]["intervened"] for s in scales],
        "s--",
        color="tab:orange",
        label="return",
    )
    twin.set_ylabel("return", color="tab:orange")
    right.set_title("Steering the first hidden layer")
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "interventions.png", bbox_inches="tight")
    numbers = {
        "ablations": {n: e.summary for n, e in ablations.items()},
        "steering": {str(s): v for s, v in steering.items()},
    }
    (args.out / "interventions.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"wrote {args.out / 'interventions.png'} and {args.out / 'interventions.json'}")


if __name__ == "__main__":
    main()
