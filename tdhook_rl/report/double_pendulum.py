"""The main job on the double pendulum: attribution of both heads, probes of every hidden
layer for the physical state, and an ablation sweep, written as a report folder.

The sections live beside this module: ``pendulum_attribution`` (targets, IG baseline,
rounding-level detection, transient vs steady state), ``pendulum_probes`` (selectivity over
a random network and the observation, saturated layers) and ``pendulum_ablation``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from tdhook_rl.attributed import Attributed
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.report.common import finish
from tdhook_rl.report.options import ExplainOptions
from tdhook_rl.report.pendulum_ablation import ablation_section
from tdhook_rl.report.pendulum_attribution import (
    attribution_section,
    ig_baseline,
    method_text,
    pendulum_method,
    policy_target,
    top_feature,
)
from tdhook_rl.report.pendulum_probes import probe_headline, probe_section
from tdhook_rl.report.pendulum_sae import sae_section
from tdhook_rl.report.pendulum_trust import trust_section
from tdhook_rl.report.writer import ReportWriter

LABELS = {
    "cart_position": ("qpos", 0),
    "hinge1_angle": ("qpos", 1),
    "hinge2_angle": ("qpos", 2),
    "hinge1_velocity": ("qvel", 1),
    "hinge2_velocity": ("qvel", 2),
    "tip_height": "tip_height",
}
ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.ELU, nn.SiLU, nn.GELU, nn.LeakyReLU)


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden layer's output, as the report records, probes and ablates it.

    Attributes:
        name: ``"actor h1"``, ``"critic h2"``, or ``"shared h1"`` for a trunk both use.
        path: its path in ``agent.actor_critic`` (where it is recorded).
        actor_path: its path in ``agent.actor`` (where it is ablated), ``None`` for a layer
            of the critic alone.
    """

    name: str
    path: str
    actor_path: str | None


def hidden_layers(agent: Any) -> list[HiddenLayer]:
    """The activation layers of ``agent.actor`` and ``agent.critic``, found in each module
    itself (TorchRL's policy and value operators, a shared trunk counted once) and located in
    ``agent.actor_critic`` by identity, never by editing path strings.

    Examples:
        >>> from tdhook_rl.agents import load
        >>> [layer.name for layer in hidden_layers(load("double_pendulum"))]
        ['actor h1', 'actor h2', 'critic h1', 'critic h2']
    """
    paths = {id(sub): name for name, sub in agent.actor_critic.named_modules()}
    in_critic = {id(sub) for sub in agent.critic.modules()}
    layers: list[HiddenLayer] = []
    counts = {"actor": 0, "shared": 0, "critic": 0}
    seen: set[int] = set()
    for owner in (agent.actor, agent.critic):
        for name, sub in owner.named_modules():
            if not isinstance(sub, ACTIVATIONS) or id(sub) in seen:
                continue
            seen.add(id(sub))
            in_actor = owner is agent.actor
            kind = ("shared" if id(sub) in in_critic else "actor") if in_actor else "critic"
            counts[kind] += 1
            layers.append(
                HiddenLayer(f"{kind} h{counts[kind]}", paths[id(sub)], name if in_actor else None)
            )
    return layers


def hidden_sites(module: nn.Module, prefix: str) -> list[str]:
    """Paths of the activation layers under ``prefix`` (the hidden layers' outputs)."""
    return [
        name
        for name, sub in module.named_modules()
        if name.startswith(prefix) and isinstance(sub, ACTIVATIONS)
    ]


def explain_double_pendulum(
    agent: Any, out_dir: str | Path, opts: ExplainOptions, *, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Runs the whole job for a shipped or user-trained double-pendulum agent
    (``tdhook_rl.agents.load("double_pendulum")``: ``actor``, ``actor_critic``, ``make_env``,
    ``obs_norm``).

    Returns:
        The report folder and the summary numbers.
    """
    from tdhook_rl.envs.double_pendulum import FEATURE_NAMES

    start = time.perf_counter()
    report = ReportWriter(
        out_dir, "tdhook-rl: what drives the double-pendulum agent", logger=opts.logger
    )
    try:
        module = agent.actor_critic
        layers = hidden_layers(agent)
        names = {layer.path: layer.name for layer in layers}
        policy = policy_target(opts.policy_target)
        standardized, raw = ig_baseline(opts.baseline, agent.obs_norm)
        method = pendulum_method(opts.method, opts.n_steps, standardized, opts.device)
        explained = Attributed(
            module,
            method,
            inputs=["observation"],
            targets={"policy": policy[0], "value": "state_value"},
        )
        recorded = Recorded(explained, {names[s]: s for s in names})
        env = agent.make_env(opts.envs, seed=opts.seed, device=opts.device)
        bar = tqdm(total=4, desc="explain", disable=not progress, unit="stage")
        bar.set_postfix_str("rollout with attribution")
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = env.rollout(opts.steps, recorded, break_when_any_done=False)
        env.close()
        bar.update()
        summary: dict[str, Any] = {
            "agent": "double_pendulum",
            "method": method_text(method, opts.baseline),
            "policy_target": opts.policy_target,
            "transitions": rollout.numel(),
            "env_copies": opts.envs,
            "steps_per_copy": opts.steps,
            "mean_reward_per_step": float(rollout["next", "reward"].mean()),
        }
        has_baseline = hasattr(method, "baseline")
        baseline = (opts.baseline, standardized, raw) if has_baseline else None
        attribution_section(
            report, rollout, summary, FEATURE_NAMES, method, policy, baseline, module
        )
        if opts.trust:
            bar.set_postfix_str("which attributions to trust")
            targets = {"policy": policy[0], "value": "state_value"}
            name = opts.method
            trust_section(report, module, targets, rollout, method, name, summary, opts.seed)
        bar.set_postfix_str("probes")
        if opts.probes:
            probe_section(report, rollout, module, names, LABELS, summary, opts.seed)
        if opts.sae:
            bar.set_postfix_str("sparse autoencoder")
            sae_section(report, agent, rollout, layers, policy[0], summary, opts)
        bar.update()
        bar.set_postfix_str("ablation sweep")
        if opts.ablation:
            ablation_section(report, agent, rollout, layers, summary, opts, progress)
        bar.update()
        what = f"{summary['transitions']} transitions, {opts.envs} environment copies"
        return finish(report, summary, start, what, bar), summary
    except BaseException:
        report.discard()
        raise


def summary_line(path: Path, summary: dict[str, Any]) -> str:
    """The one line ``tdhook-rl explain`` prints at the end."""
    line = (
        f"report: {path / 'report.html'} | {summary['transitions']} transitions | "
        f"{top_feature(summary, 'policy')}, {top_feature(summary, 'value')}"
    )
    if "probes" in summary:
        line += f" | {probe_headline(summary)}"
    if "ablations" in summary:
        worst = min(summary["ablations"], key=lambda r: r["change"])
        line += (
            f" | largest return change {worst['change']:+.0f} (ablating {worst['name']}, "
            f"n = {worst['episodes']})"
        )
    return line + f" | {summary['wall_seconds']:.0f} s"
