"""Train PPO on the double pendulum with an ``InterpretabilityCallback`` attached.

The agent (separate 2x64 Tanh actor and critic) and the hyper-parameters are the shipped
agent's (``agents/double_pendulum/model.py`` and ``train.py``'s defaults); only the frame
budget is shorter. Every ``--every-frames`` frames the callback runs one evaluation rollout on
4 environment copies and logs, next to the training scalars:

- ``eval/return``: the deterministic policy's mean return over the episodes that end inside
  the evaluation rollout (``--eval-steps`` steps per copy);
- ``attribution/{policy,value}/<feature>``: each observation feature's share of the
  integrated-gradients attribution of the policy and of the value head. The policy head is
  the action distribution's location (``ActionLoc()``): the evaluation acts
  deterministically, and the mode's log-probability has a zero gradient for this actor's
  state-independent scale (the callback would flag that head as rounding noise,
  ``attribution/policy/rounding_level = 1``, and log no shares for it);
- ``probe/actor_h{1,2}/<label>/r2``: held-out R^2 of ridge probes from the actor's hidden
  layers to the simulator state (cart position, hinge angles and velocities, tip height);
- ``intervention/actor_h2_half_ablated/return_change``: what zeroing half of the actor's
  second hidden layer costs;
- ``tdhook/eval_seconds`` and ``tdhook/overhead_fraction``: what the callback costs.

With ``--checkpoint-every N`` it also keeps the actor-critic's state dict every N frames
under ``<log-dir>/checkpoints`` and, at the end, probes the simulator-state labels at both
actor layers of every checkpoint (``callback.concepts_across()``): the McGrath map
``<log-dir>/figures/concepts_across.png`` and ``concepts/<label>/<layer>/selectivity``.

Run:  python examples/train_with_callback.py [--frames 100000] [--every-frames 25000]
          [--log-dir runs/train_with_callback] [--logger {csv,tensorboard}]
          [--checkpoint-every 25000]
Writes: <log-dir>/tdhook_rl/scalars/**/*.csv (CSV logger) and <log-dir>/figures/*.png
Takes: 1.7-2.1 min at the defaults (4 evaluations, overhead 20-21%); 1.5-1.9 min with
    --every-frames 50000 --figures-every 5 (the callback's defaults, overhead 11-16%); one
    torch thread on 2 CPU cores shared with other jobs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import ObservationNorm, RewardSum, TransformedEnv
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from tdhook_rl.agents.double_pendulum import train
from tdhook_rl.agents.double_pendulum.model import build_agent
from tdhook_rl.callbacks import (
    AttributionSpec,
    CheckpointSpec,
    InterpretabilityCallback,
    Interventions,
    LogTo,
    ProbeSpec,
    Schedule,
)
from tdhook_rl.callbacks.options import EXPERIMENT
from tdhook_rl.envs.double_pendulum import FEATURE_NAMES, make_double_pendulum
from tdhook_rl.interventions import Ablate
from tdhook_rl.report.double_pendulum import LABELS, hidden_sites
from tdhook_rl.targets import ActionLoc, as_target

EVAL_ENVS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100_000, help="training frames")
    p.add_argument("--every-frames", type=int, default=25_000, help="evaluation period")
    p.add_argument("--eval-steps", type=int, default=500, help="steps per evaluation rollout")
    p.add_argument("--figures-every", type=int, default=1, help="figures every N evaluations")
    p.add_argument("--log-dir", type=Path, default=Path("runs/train_with_callback"))
    p.add_argument("--logger", choices=["csv", "tensorboard"], default="csv")
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint period, 0: off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p.parse_args(argv)


def _norm(env: TransformedEnv) -> ObservationNorm:
    return next(t for t in env.transform if isinstance(t, ObservationNorm))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains, prints where the logs are; returns the paths and the measured numbers."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    recipe = train.parse_args([])  # the shipped agent's hyper-parameters

    # observation statistics: random-policy steps first, then updated after every batch
    stats = train.RunningMeanStd(len(FEATURE_NAMES))
    warmup = make_double_pendulum(recipe.num_envs, seed=args.seed + 1, simulator_state=False)
    stats.update(warmup.rollout(2048 // recipe.num_envs, break_when_any_done=False)["observation"])
    warmup.close()
    loc, scale = stats.stats(recipe.obs_eps)
    agent = build_agent(vars(recipe), {"loc": loc, "scale": scale, "clip": recipe.obs_clip})
    env = agent.make_env(recipe.num_envs, seed=args.seed, simulator_state=False)
    env.append_transform(RewardSum())
    eval_env = agent.make_env(EVAL_ENVS, seed=args.seed + 10_000)  # with qpos, qvel, tip
    norms = [_norm(env), _norm(eval_env)]

    actor_sites = hidden_sites(agent.actor_critic, "module.0")  # the two Tanh outputs
    half_units = recipe.hidden[-1] // 2
    checkpoints = None
    if args.checkpoint_every > 0:  # the probe labels, read from the evaluation rollout
        checkpoints = CheckpointSpec(
            args.log_dir / "checkpoints",
            every_frames=args.checkpoint_every,
            concepts=lambda td: {n: as_target(s)(td, td) for n, s in LABELS.items()},
        )
    try:
        callback = InterpretabilityCallback(
            eval_env,
            agent.actor_critic,  # computes both heads
            AttributionSpec(
                {"policy": ActionLoc(), "value": "state_value"}, feature_names=FEATURE_NAMES
            ),
            schedule=Schedule(every_frames=args.every_frames, eval_steps=args.eval_steps),
            probes=ProbeSpec({f"actor_h{i + 1}": s for i, s in enumerate(actor_sites)}, LABELS),
            interventions=Interventions(
                {"actor_h2_half_ablated": {actor_sites[-1]: Ablate(units=range(half_units))}},
                episodes=EVAL_ENVS,
            ),
            log=LogTo(args.logger, log_dir=args.log_dir, figures_every=args.figures_every),
            checkpoints=checkpoints,
        )
    except ImportError as err:  # e.g. --logger tensorboard without tensorboard
        raise SystemExit(str(err)) from err
    logger = callback.logger

    # PPO, as train.py
    n_batches = -(-args.frames // recipe.frames_per_batch)
    collector = Collector(
        env,
        agent.actor,
        frames_per_batch=recipe.frames_per_batch,
        total_frames=n_batches * recipe.frames_per_batch,
        auto_register_policy_transforms=False,
    )
    gae = GAE(gamma=recipe.gamma, lmbda=recipe.lmbda, value_network=agent.critic, average_gae=False)
    loss_module = ClipPPOLoss(
        agent.actor,
        agent.critic,
        clip_epsilon=recipe.clip,
        entropy_bonus=recipe.entropy_coef > 0,
        entropy_coeff=recipe.entropy_coef,
        critic_coeff=recipe.critic_coef,
        loss_critic_type="l2",
        normalize_advantage=True,
    )
    params = list(loss_module.parameters())
    optim = torch.optim.Adam(params, lr=recipe.lr, eps=1e-5)
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(recipe.frames_per_batch),
        sampler=SamplerWithoutReplacement(),
        batch_size=recipe.minibatch,
    )
    minibatches = -(-recipe.frames_per_batch // recipe.minibatch)
    total_updates, updates, frames = n_batches * recipe.epochs * minibatches, 0, 0
    callback.start()  # the overhead clock: from here on
    for data in collector:
        frames += data.numel()
        done = data["next", "done"]
        if done.any() and logger is not None:
            episode_return = data["next", "episode_reward"][done].mean().item()
            logger.log_scalar("train/episode_return", episode_return, frames)
        stats.update(data["raw_observation"])
        data["next", "reward"] = data["next", "reward"] * recipe.reward_scale
        for _ in range(recipe.epochs):
            with torch.no_grad():
                gae(data)
            buffer.extend(data.reshape(-1))
            for batch in buffer:
                if recipe.anneal_lr:
                    for group in optim.param_groups:
                        group["lr"] = recipe.lr * (1 - updates / total_updates)
                loss = loss_module(batch)
                total = sum(v for k, v in loss.items() if k.startswith("loss_"))
                optim.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
                optim.step()
                updates += 1
        loc, scale = stats.stats(recipe.obs_eps)
        for norm in norms:  # the evaluation env sees what the policy now expects
            norm.loc.copy_(loc)
            norm.scale.copy_(scale)
        scalars = callback(frames)
        if scalars is not None:
            print(
                f"{frames:>7} frames  {time.perf_counter() - start:6.1f} s  "
                f"eval return {scalars['eval/return']:7.1f}  "
                f"evaluation {scalars['tdhook/eval_seconds']:4.1f} s  "
                f"overhead {100 * scalars['tdhook/overhead_fraction']:4.1f}%",
                flush=True,
            )
    collector.shutdown()
    if checkpoints is not None:  # concepts across the kept checkpoints, last rollout
        if callback.last_rollout is None:
            callback(frames, force=True)
        callback.concepts_across()
    eval_env.close()
    wall = time.perf_counter() - start

    summary = {
        "frames": frames,
        "wall_seconds": wall,
        "evaluations": len(callback.history),
        "overhead_fraction": callback.overhead_fraction,
        "scalars_dir": args.log_dir / EXPERIMENT / "scalars",
        "figures_dir": args.log_dir / "figures",
    }
    if args.logger == "csv":
        print(f"scalars (CSV): {summary['scalars_dir']}")
    else:
        print(f"scalars (TensorBoard): {args.log_dir / EXPERIMENT}")
    print(f"figures: {summary['figures_dir']}")
    print(
        f"{frames} frames in {wall:.1f} s; the callback's {summary['evaluations']} "
        f"evaluations took {100 * summary['overhead_fraction']:.1f}% of the wall time since "
        "training started"
    )
    return summary


if __name__ == "__main__":
    main()
