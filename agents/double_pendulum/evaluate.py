"""Deterministic evaluation of the double-pendulum agent on Gymnasium's v5 env.

Run ``python -m tdhook_rl.agents.double_pendulum.evaluate`` for the 20-episode mean and
standard deviation of the shipped agent (``--checkpoint`` for another one).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.envs.double_pendulum import MAX_EPISODE_STEPS, make_double_pendulum

__all__ = ["episode_returns", "evaluate", "summarize"]


def episode_returns(
    policy: TensorDictModuleBase,
    obs_norm: dict[str, Any] | None,
    *,
    num_episodes: int = 20,
    seed: int = 0,
    max_steps: int = MAX_EPISODE_STEPS,
    deterministic: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plays ``num_episodes`` episodes at once (one batched env) and returns their returns.

    Episode ``i`` starts from Gymnasium's reset with seed ``seed + i``. Each copy's first
    episode counts; it ends at termination, at Gymnasium's 1,000-step limit or after
    ``max_steps`` steps, whichever is first.

    Args:
        policy: a TensorDict policy reading the standardized ``"observation"``.
        obs_norm: the observation statistics the policy was trained with.
        num_episodes: number of episodes.
        seed: seed of the first episode.
        max_steps: step cap per episode.
        deterministic: act with the distribution's deterministic action (``tanh(loc)``)
            instead of sampling.

    Returns:
        ``(returns, lengths)``, each of shape ``(num_episodes,)``: the undiscounted sum of
        the environment's rewards and the number of steps.

    Examples:
        >>> from tdhook_rl.agents.double_pendulum.model import load
        >>> agent = load()
        >>> returns, lengths = episode_returns(agent.actor, agent.obs_norm, num_episodes=2,
        ...                                    max_steps=50)
        >>> lengths.tolist()
        [50, 50]
    """
    env = make_double_pendulum(num_episodes, obs_norm=obs_norm, seed=seed, simulator_state=False)
    mode = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    try:
        with set_exploration_type(mode), torch.no_grad():
            td = env.rollout(max_steps, policy, break_when_any_done=False)
    finally:
        env.close()
    if num_episodes == 1:
        td = td.unsqueeze(0)
    # (B, T, 1) -> (B, T): a step counts while no earlier step of its copy was done
    done = td["next", "done"].squeeze(-1).long()
    first_episode = (done.cumsum(-1) - done) == 0
    reward = td["next", "reward"].squeeze(-1).double()
    returns = (reward * first_episode).sum(-1)
    lengths = first_episode.sum(-1)
    return returns, lengths


def evaluate(
    checkpoint: str | Path | None = None, *, num_episodes: int = 20, seed: int = 0
) -> dict[str, Any]:
    """Mean and standard deviation of the return of a saved agent over deterministic episodes.

    Args:
        checkpoint: a checkpoint written by ``train.py``; by default the shipped one.
        num_episodes: number of episodes (seeds ``seed, ..., seed + num_episodes - 1``).
        seed: seed of the first episode.

    Returns:
        ``{"mean", "std", "min", "max", "mean_length", "returns", "num_episodes", "seed"}``
        (``std`` is the population standard deviation; ``returns`` is a list).
    """
    from tdhook_rl.agents.double_pendulum.model import load

    agent = load(checkpoint=checkpoint)
    returns, lengths = episode_returns(
        agent.actor, agent.obs_norm, num_episodes=num_episodes, seed=seed
    )
    return summarize(returns, lengths, seed)


def summarize(returns: torch.Tensor, lengths: torch.Tensor, seed: int) -> dict[str, Any]:
    """The statistics :func:`evaluate` reports.

    Args:
        returns: per-episode returns, as :func:`episode_returns` gives them.
        lengths: per-episode lengths.
        seed: the seed of the first episode (recorded in the result).

    Returns:
        ``{"mean", "std", "min", "max", "mean_length", "returns", "num_episodes", "seed"}``.

    Examples:
        >>> summarize(torch.tensor([1.0, 3.0]), torch.tensor([10, 20]), seed=0)["std"]
        1.0
    """
    return {
        "mean": returns.mean().item(),
        "std": returns.std(correction=0).item(),
        "min": returns.min().item(),
        "max": returns.max().item(),
        "mean_length": lengths.double().mean().item(),
        "returns": [round(r, 2) for r in returns.tolist()],
        "num_episodes": returns.numel(),
        "seed": seed,
    }


def main() -> None:
    """Prints the mean and std return of a checkpoint (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = evaluate(args.checkpoint, num_episodes=args.episodes, seed=args.seed)
    print(
        f"return over {result['num_episodes']} deterministic episodes (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1}): {result['mean']:.1f} +- {result['std']:.1f} "
        f"(min {result['min']:.1f}, max {result['max']:.1f}, "
        f"mean length {result['mean_length']:.0f})"
    )
    print("returns:", result["returns"])


if __name__ == "__main__":
    main()
