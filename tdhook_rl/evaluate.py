"""Causal effect of interventions on behaviour: paired rollouts with and without them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.core.keys import key_tuple
from tdhook_rl.core.sites import SiteSpec
from tdhook_rl.latent.intervened import Intervened, InterventionSpec


@dataclass
class EpisodeStats:
    """Per-episode statistics of one set of rollouts (tensors of shape ``[episodes]``)."""

    returns: torch.Tensor
    lengths: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor


@dataclass
class InterventionEffect:
    """Paired comparison of rollouts without (``clean``) and with (``intervened``) the
    interventions, from the same seeds. ``summary`` holds the mean paired differences with
    bootstrap confidence intervals (``confidence`` level)."""

    clean: EpisodeStats
    intervened: EpisodeStats
    confidence: float
    summary: dict[str, dict[str, float]]

    def __str__(self) -> str:
        lines = []
        for name, s in self.summary.items():
            lines.append(
                f"{name:<14} clean {s['clean']:9.2f}  intervened {s['intervened']:9.2f}  "
                f"change {s['change']:+9.2f}  [{s['low']:+.2f}, {s['high']:+.2f}]"
            )
        return "\n".join(lines)


def reward_and_done(env: EnvBase, rollout: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
    """The rollout's rewards and episode ends, both ``[*batch, T]``. A multi-agent env's
    per-agent rewards (``("agents", "reward")``, ``[*batch, T, n_agents, 1]``) are averaged
    over the agents: the return is then the mean return of an agent (of the first group's
    agents, where the env has several reward keys). The episode ends where the env's own
    ``done`` (else its shallowest done key) is set.

    Examples:
        >>> from torchrl.envs import GymEnv
        >>> env = GymEnv("CartPole-v1")
        >>> reward, done = reward_and_done(env, env.rollout(5))
        >>> reward.shape == done.shape
        True
    """
    reward = rollout.get(("next", *key_tuple(env.reward_keys[0])))
    # the episode's end: the env's own done flag (the shallowest key), not an agent's
    keys = env.done_keys
    done_key = "done" if "done" in keys else min(keys, key=lambda k: len(key_tuple(k)))
    done = rollout.get(("next", *key_tuple(done_key))).squeeze(-1)
    reward = reward.reshape(*done.shape, -1).mean(-1)
    return reward, done


def _valid_steps(done: torch.Tensor) -> torch.Tensor:
    """``[..., T]`` mask of the steps up to and including each copy's first done."""
    done = done.long()
    return (done.cumsum(-1) - done) == 0


def _stats(env: EnvBase, rollout: TensorDictBase, action_key: Any) -> EpisodeStats:
    reward, done = reward_and_done(env, rollout)  # env.rollout is shaped [*env_batch, T]
    valid = _valid_steps(done)
    action = rollout[action_key].float()
    action = action.reshape(*valid.shape, -1)
    mask = valid.unsqueeze(-1).to(action.dtype)
    n = mask.sum((-1, -2)).clamp_min(1)
    mean = (action * mask).sum((-1, -2)) / n
    var = ((action - mean[..., None, None]) ** 2 * mask).sum((-1, -2)) / n
    return EpisodeStats(
        returns=(reward * valid).sum(-1),
        lengths=valid.sum(-1),
        action_mean=mean,
        action_std=var.sqrt(),
    )


def _run(
    env: EnvBase, policy, episodes: int, seed: int, max_steps: int, action_key
) -> EpisodeStats:
    if env.batch_size == torch.Size([]):
        per_episode = []
        for i in range(episodes):
            env.set_seed(seed + i)
            rollout = env.rollout(max_steps, policy, break_when_any_done=True)
            per_episode.append(_stats(env, rollout, action_key))
        return EpisodeStats(
            *[
                torch.stack([getattr(s, f) for s in per_episode])
                for f in EpisodeStats.__annotations__
            ]
        )
    if env.batch_size != torch.Size([episodes]):
        raise ValueError(
            f"a batched env must hold one copy per episode: batch_size [{episodes}], got "
            f"{list(env.batch_size)}; build it with {episodes} copies or pass episodes="
            f"{env.batch_size.numel() if len(env.batch_size) == 1 else '...'}"
        )
    env.set_seed(seed)
    rollout = env.rollout(max_steps, policy, break_when_any_done=False)
    return _stats(env, rollout, action_key)


def _bootstrap_ci(diff: torch.Tensor, confidence: float, n_boot: int, seed: int):
    generator = torch.Generator(device=diff.device).manual_seed(seed)
    idx = torch.randint(
        0, diff.numel(), (n_boot, diff.numel()), generator=generator, device=diff.device
    )
    means = diff.double()[idx].mean(-1)
    tail = (1 - confidence) / 2
    q = torch.tensor([tail, 1 - tail], dtype=means.dtype, device=means.device)
    low, high = torch.quantile(means, q).tolist()
    return low, high


@torch.no_grad()
def intervention_effect(
    env: EnvBase,
    policy: TensorDictModuleBase,
    interventions: Mapping[SiteSpec, InterventionSpec],
    *,
    episodes: int = 20,
    seed: int = 0,
    max_steps: int = 1000,
    deterministic: bool = True,
    confidence: float = 0.95,
    n_boot: int = 2000,
    action_key: NestedKey | None = None,
) -> InterventionEffect:
    """Runs paired rollouts with and without ``interventions`` and compares them.

    Both runs of a pair start from the same seed, so differences come from the interventions
    (and, with ``deterministic=False``, from sampling). With an unbatched env, episodes run
    one after the other (seeds ``seed, seed + 1, ...``); with a batched env (e.g. thousands of
    copies on a GPU) one rollout holds one copy per episode, and each copy's episode ends at
    its first ``done`` (later steps are masked, nothing moves to the host per step).

    Args:
        env: a TorchRL env, unbatched or with ``batch_size == [episodes]``.
        policy: the agent's policy.
        interventions: ``{site: intervention}`` as in :class:`~tdhook_rl.Intervened`.
        episodes: number of paired episodes.
        seed: seed of the first episode.
        max_steps: step cap per episode.
        deterministic: act with the distribution's mode (as TorchRL's evaluators do).
        confidence: level of the bootstrap confidence intervals.
        n_boot: bootstrap resamples.
        action_key: where the action is; by default the env's (``env.action_keys[0]``:
            ``"action"``, or ``("agents", "action")`` in a multi-agent env).

    Returns:
        An :class:`InterventionEffect`.

    Examples:
        >>> # effect = intervention_effect(env, actor, {"module.0.module.1": Ablate(units=[3])})
        >>> # print(effect)   # return / length / action changes with 95% intervals
    """
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2 for a confidence interval, got {episodes}")
    intervened = Intervened(policy, interventions)
    if action_key is None:
        action_key = env.action_keys[0]
    kind = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    with set_exploration_type(kind):
        clean = _run(env, policy, episodes, seed, max_steps, action_key)
        changed = _run(env, intervened, episodes, seed, max_steps, action_key)
    summary = {}
    for name in ("returns", "lengths", "action_mean", "action_std"):
        a, b = getattr(clean, name).double(), getattr(changed, name).double()
        low, high = _bootstrap_ci(b - a, confidence, n_boot, seed)
        summary[name] = {
            "clean": float(a.mean()),
            "intervened": float(b.mean()),
            "change": float((b - a).mean()),
            "low": low,
            "high": high,
        }
    return InterventionEffect(clean, changed, confidence, summary)
