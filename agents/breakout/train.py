"""Seeded PPO training of the Breakout agent with TorchRL components.

A :class:`~torchrl.collectors.Collector` plays ``--envs`` batched MinAtar Breakout games
(:class:`~tdhook_rl.envs.minatar.MinAtarEnv`, with a ``RewardSum`` for the episode scores);
each batch gets TorchRL's :class:`~torchrl.objectives.value.GAE` advantages and goes through a
:class:`~torchrl.data.TensorDictReplayBuffer` (sampling without replacement) for a few epochs
of :class:`~torchrl.objectives.ClipPPOLoss` minibatches (the shared trunk of the
``ActorValueOperator`` gets both the policy's and the value's gradients). Every
``--eval-every`` frames the greedy agent plays seeded evaluation episodes (seeds apart from
the ones ``QUALITY.md`` reports); the best evaluation so far is written to
``checkpoint.pt`` and the latest to ``checkpoint_last.pt``.

Run (``--max-minutes`` caps the wall time on a slow machine)::

    python -m tdhook_rl.agents.breakout.train --frames 3000000

It writes ``checkpoint.pt`` and ``QUALITY.md`` (measured by :mod:`.evaluate`) next to this
file (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import RewardSum, TransformedEnv
from torchrl.modules import ActorValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from tdhook_rl.agents.breakout.evaluate import episode_scores, quality_report, summarize
from tdhook_rl.agents.breakout.model import DEFAULT_CONFIG, load, make_agent
from tdhook_rl.envs.minatar import MinAtarEnv

__all__ = ["main", "save", "train"]

HERE = Path(__file__).parent
#: periodic evaluations play games seeded from here (QUALITY.md uses seeds from 0)
PERIODIC_EVAL_SEED = 100_000


def save(agent: ActorValueOperator, path: Path, meta: dict[str, Any]) -> None:
    """Writes the agent's weights (float16: half the size), config and ``meta``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half() for k, v in agent.state_dict().items()}
    torch.save({"config": DEFAULT_CONFIG, "state_dict": state, "meta": meta}, path)


def train(
    *,
    frames: int = 3_000_000,
    envs: int = 32,
    horizon: int = 128,
    epochs: int = 4,
    minibatch: int = 512,
    lr: float = 5e-4,
    gamma: float = 0.99,
    lmbda: float = 0.95,
    clip: float = 0.2,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 0.5,
    max_grad_norm: float = 0.5,
    eval_every: int = 200_000,
    eval_episodes: int = 32,
    max_minutes: float | None = None,
    seed: int = 0,
    out: Path | str = HERE,
    verbose: bool = False,
) -> tuple[ActorValueOperator, dict[str, Any]]:
    """Trains the agent by PPO (see the module documentation).

    Args:
        frames: environment steps in all (rounded up to whole batches).
        envs: games played at once; horizon: steps per game per batch.
        epochs, minibatch, lr, gamma, lmbda, clip, entropy_coeff, critic_coeff,
            max_grad_norm: PPO's usual knobs (the learning rate decays linearly to zero).
        eval_every: frames between evaluations (``0``: only at the end).
        eval_episodes: greedy episodes per evaluation.
        max_minutes: stop early after this wall time.
        seed: seeds the network, the sampling and the games.
        out: the folder for ``checkpoint.pt``.
        verbose: print a line per batch (frames, minutes, training score, evaluations).

    Returns:
        the agent as trained last and a summary dict (frames, minutes, best evaluation).

    Examples:
        >>> import tempfile
        >>> agent, summary = train(frames=64, envs=4, horizon=16, minibatch=32,
        ...                        eval_episodes=2, out=tempfile.mkdtemp())
        >>> summary["frames"]
        64
    """
    settings = {k: v for k, v in locals().items() if k not in ("out", "verbose")}
    out = Path(out)
    torch.manual_seed(seed)
    agent = make_agent(DEFAULT_CONFIG)
    actor, critic = agent.get_policy_operator(), agent.get_value_operator()
    env = TransformedEnv(MinAtarEnv("breakout", batch_size=[envs]), RewardSum())
    env.set_seed(seed)
    batch_frames = envs * horizon
    n_batches = -(-frames // batch_frames)
    collector = Collector(
        env,
        actor,
        frames_per_batch=batch_frames,
        total_frames=n_batches * batch_frames,
        auto_register_policy_transforms=False,
    )
    gae = GAE(gamma=gamma, lmbda=lmbda, value_network=critic, average_gae=False)
    loss_module = ClipPPOLoss(
        actor,
        critic,
        clip_epsilon=clip,
        entropy_bonus=entropy_coeff > 0,
        entropy_coeff=entropy_coeff,
        critic_coeff=critic_coeff,
        loss_critic_type="smooth_l1",
        normalize_advantage=True,
    )
    params = list(agent.parameters())
    optim = torch.optim.Adam(params, lr=lr, eps=1e-5)
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(batch_frames),
        sampler=SamplerWithoutReplacement(),
        batch_size=minibatch,
    )
    total_updates = n_batches * epochs * -(-batch_frames // minibatch)
    start = time.monotonic()
    done_frames, updates, next_eval = 0, 0, eval_every
    best: dict[str, Any] = {"mean": -1.0, "frames": 0}
    recent: list[float] = []
    for data in collector:
        done_frames += data.numel()
        done = data["next", "done"]
        if done.any():
            recent = (recent + data["next", "episode_reward"][done].tolist())[-200:]
        for _ in range(epochs):
            with torch.no_grad():
                gae(data)  # (envs, T): time is the last batch dim
            buffer.extend(data.reshape(-1))
            for batch in buffer:
                for group in optim.param_groups:
                    group["lr"] = lr * (1 - updates / total_updates)
                loss = loss_module(batch)
                total = loss["loss_objective"] + loss["loss_critic"]
                if "loss_entropy" in loss.keys():
                    total = total + loss["loss_entropy"]
                optim.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optim.step()
                updates += 1
        minutes = (time.monotonic() - start) / 60
        mean_recent = sum(recent) / len(recent) if recent else float("nan")
        last = done_frames >= n_batches * batch_frames
        timeout = max_minutes is not None and minutes > max_minutes
        line = f"frames {done_frames} min {minutes:.1f} train_score {mean_recent:.2f}"
        if (eval_every and done_frames >= next_eval) or last or timeout:
            next_eval += eval_every
            agent.eval()
            stats = summarize(episode_scores(agent, eval_episodes, PERIODIC_EVAL_SEED))
            agent.train()
            line += f" eval {stats['mean']:.2f}+-{stats['sem']:.2f}"
            meta = {"frames": done_frames, "minutes": minutes, "eval_mean": stats["mean"]}
            save(agent, out / "checkpoint_last.pt", meta)
            if stats["mean"] > best["mean"]:
                best = {"mean": stats["mean"], "frames": done_frames}
                save(agent, out / "checkpoint.pt", meta)
        if verbose:
            print(line, flush=True)
        if timeout:
            break
    collector.shutdown()
    summary = {
        "frames": done_frames,
        "minutes": (time.monotonic() - start) / 60,
        "best_frames": best["frames"],
        "best_eval_mean": best["mean"],
        "settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
    }
    # the summary goes into the shipped (best) checkpoint's meta
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    saved["meta"] = {**saved["meta"], **summary}
    torch.save(saved, out / "checkpoint.pt")
    return agent, summary


def main(argv: list[str] | None = None) -> None:
    """The command line: trains, then measures the best checkpoint and writes ``QUALITY.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3_000_000)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--entropy-coeff", type=float, default=0.01)
    parser.add_argument("--eval-every", type=int, default=200_000)
    parser.add_argument("--max-minutes", type=float, default=45.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=100, help="QUALITY.md episodes")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    _, summary = train(
        frames=args.frames,
        envs=args.envs,
        horizon=args.horizon,
        epochs=args.epochs,
        minibatch=args.minibatch,
        lr=args.lr,
        entropy_coeff=args.entropy_coeff,
        eval_every=args.eval_every,
        max_minutes=args.max_minutes,
        seed=args.seed,
        out=args.out,
        verbose=True,
    )
    command = "python -m tdhook_rl.agents.breakout.train " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    summary["command"] = command.strip()
    saved = torch.load(args.out / "checkpoint.pt", weights_only=True)
    saved["meta"]["command"] = summary["command"]
    torch.save(saved, args.out / "checkpoint.pt")
    agent = load(checkpoint=args.out / "checkpoint.pt")
    report = quality_report(agent, saved["meta"], args.episodes)
    (args.out / "QUALITY.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
