"""How well the Breakout agent plays: mean score over seeded episodes, against random play.

Run ``python -m tdhook_rl.agents.breakout.evaluate`` to measure the shipped checkpoint again
and rewrite ``QUALITY.md`` (deterministic for a given checkpoint and seed).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.envs.minatar import MinAtarEnv

__all__ = ["MAX_STEPS", "episode_scores", "quality_report", "random_policy", "summarize"]

HERE = Path(__file__).parent
#: evaluation episodes end after this many steps (a good Breakout player may never lose)
MAX_STEPS = 5000

Policy = Callable[[TensorDictBase], TensorDictBase]


def random_policy(n_actions: int = 3, seed: int = 0) -> Policy:
    """A uniformly random player over ``n_actions``, seeded (its own generator).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = random_policy()(TensorDict(batch_size=[5]))
        >>> td["action"].shape
        torch.Size([5])
    """
    generator = torch.Generator().manual_seed(seed)

    def act(td: TensorDictBase) -> TensorDictBase:
        td["action"] = torch.randint(n_actions, td.batch_size, generator=generator)
        return td

    return act


def episode_scores(
    policy: Policy,
    episodes: int = 100,
    seed: int = 0,
    max_steps: int = MAX_STEPS,
    exploration: ExplorationType = ExplorationType.DETERMINISTIC,
) -> torch.Tensor:
    """Plays one episode in each of ``episodes`` batched Breakout games and returns the
    scores (bricks broken, ``[episodes]``).

    Game ``i`` is seeded ``seed + i`` (see :class:`~tdhook_rl.envs.minatar.MinAtarEnv`);
    an episode ends when the ball is lost or after ``max_steps`` steps.

    Examples:
        >>> scores = episode_scores(random_policy(), episodes=4, seed=0)
        >>> scores.shape
        torch.Size([4])
    """
    env = MinAtarEnv("breakout", batch_size=[episodes], max_steps=max_steps)
    env.set_seed(seed)
    td = env.reset()
    scores = torch.zeros(episodes)
    alive = torch.ones(episodes, dtype=torch.bool)
    with torch.no_grad(), set_exploration_type(exploration):
        for _ in range(max_steps):
            td = env.step(policy(td))
            scores += td["next", "reward"].squeeze(-1) * alive
            alive &= ~td["next", "done"].squeeze(-1)
            if not alive.any():
                break
            td = td["next"]
    return scores


def summarize(scores: torch.Tensor) -> dict[str, float]:
    """Mean, standard error, min and max of ``scores``.

    Examples:
        >>> summarize(torch.tensor([1.0, 3.0]))["mean"]
        2.0
    """
    n = scores.numel()
    sem = float(scores.std()) / math.sqrt(n) if n > 1 else float("nan")
    return {
        "episodes": n,
        "mean": float(scores.mean()),
        "sem": sem,
        "min": float(scores.min()),
        "max": float(scores.max()),
    }


def quality_report(agent: Any, summary: dict[str, Any], episodes: int = 100, seed: int = 0) -> str:
    """Measures the agent (greedy and sampled) and random play; returns ``QUALITY.md``."""
    torch.manual_seed(seed)  # the sampled actions
    rows = {
        "agent, most probable action": summarize(episode_scores(agent, episodes, seed)),
        "agent, sampled actions": summarize(
            episode_scores(agent, episodes, seed, exploration=ExplorationType.RANDOM)
        ),
        "uniformly random actions": summarize(episode_scores(random_policy(), episodes, seed)),
    }
    lines = [
        "# Breakout agent (MinAtar): measured quality",
        "",
        f"Trained by `{summary.get('command', 'python -m tdhook_rl.agents.breakout.train')}`:"
        f" PPO, {summary.get('frames', '?'):,} frames in {summary.get('minutes', 0):.1f}"
        " minutes on one CPU thread (a shared 2-core machine); the shipped checkpoint is the"
        f" best periodic evaluation (at {summary.get('best_frames', '?'):,} frames).",
        f"Settings: {summary.get('settings', '')}",
        "",
        "## Score (bricks broken per episode)",
        "",
        f"{episodes} episodes of MinAtar Breakout (sticky actions 0.1, minimal action set),"
        f" game `i` seeded `{seed} + i`, at most {MAX_STEPS} steps per episode;"
        f" mean +- standard error. Sampled actions: torch seeded {seed}.",
        "",
        "| player | mean | s.e. | min | max |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['mean']:.2f} | {s['sem']:.2f} | {s['min']:.0f} | {s['max']:.0f} |"
        )
    lines += [
        "",
        f"Reproduce: `python -m tdhook_rl.agents.breakout.evaluate --episodes {episodes}"
        f" --seed {seed}` (rewrites this file).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The command line: measures a checkpoint and writes ``QUALITY.md`` next to it."""
    from tdhook_rl.agents.breakout.model import CHECKPOINT, load

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    saved = torch.load(args.checkpoint, weights_only=True)
    report = quality_report(
        load(checkpoint=args.checkpoint), saved["meta"], args.episodes, args.seed
    )
    (args.checkpoint.parent / "QUALITY.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
