"""The main job on the double pendulum: attribution of both heads, probes of every hidden
layer for the physical state, and an ablation sweep, written as a report folder."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from tdhook_rl.attributed import Attributed
from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.interventions import Ablate
from tdhook_rl.latent.probes import fit_probes, randomized_copy
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.report.common import attribution_method, finish
from tdhook_rl.report.writer import ReportWriter
from tdhook_rl.targets import ActionLogProb

LABELS = {
    "cart_position": ("qpos", 0),
    "hinge1_angle": ("qpos", 1),
    "hinge2_angle": ("qpos", 2),
    "hinge1_velocity": ("qvel", 1),
    "hinge2_velocity": ("qvel", 2),
    "tip_height": "tip_height",
}
ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.ELU, nn.SiLU, nn.GELU, nn.LeakyReLU)


@dataclass
class ExplainOptions:
    """Budget and choices of ``tdhook-rl explain`` (see ``tdhook-rl explain --help``)."""

    method: str = "ig"
    n_steps: int = 32
    steps: int = 1000
    envs: int = 4
    episodes: int = 4
    groups: int = 4
    ablation_steps: int = 300
    seed: int = 0
    device: str = "cpu"
    probes: bool = True
    ablation: bool = True
    logger: str | None = None


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
    (``tdhook_rl.agents.load("double_pendulum")``: ``actor``, ``actor_critic``, ``make_env``).

    Returns:
        The report folder and the summary numbers.
    """
    from tdhook_rl.envs.double_pendulum import FEATURE_NAMES
    from tdhook_rl.viz import (
        intervention_effects,
        probe_scores,
    )

    start = time.perf_counter()
    report = ReportWriter(
        out_dir, "tdhook-rl: what drives the double-pendulum agent", logger=opts.logger
    )
    try:
        module = agent.actor_critic
        actor_sites = hidden_sites(module, "module.0")
        critic_sites = hidden_sites(module, "module.1")
        names = {s: f"actor h{i + 1}" for i, s in enumerate(actor_sites)}
        names |= {s: f"critic h{i + 1}" for i, s in enumerate(critic_sites)}
        explained = Attributed(
            module,
            attribution_method(opts.method, opts.n_steps),
            inputs=["observation"],
            targets={"policy": ActionLogProb(), "value": "state_value"},
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
            "method": repr(explained.method),
            "transitions": rollout.numel(),
            "env_copies": opts.envs,
            "steps_per_copy": opts.steps,
            "mean_reward_per_step": float(rollout["next", "reward"].mean()),
        }
        _attribution_section(report, rollout, summary, FEATURE_NAMES)
        bar.set_postfix_str("probes")
        if opts.probes:
            _probe_section(report, rollout, module, names, summary, opts, probe_scores)
        bar.update()
        bar.set_postfix_str("ablation sweep")
        if opts.ablation:
            _ablation_section(
                report, agent, actor_sites, names, summary, opts, progress, intervention_effects
            )
        bar.update()
        what = f"{summary['transitions']} transitions, {opts.envs} environment copies"
        return finish(report, summary, start, what, bar), summary
    except BaseException:
        report.discard()
        raise


def summary_line(path: Path, summary: dict[str, Any]) -> str:
    """The one line ``tdhook-rl explain`` prints at the end."""
    shares = summary["attribution_share"]
    top = {h: max(s, key=s.get) for h, s in shares.items()}
    line = (
        f"report: {path / 'report.html'} | {summary['transitions']} transitions | "
        f"policy attends most to {top['policy']}, value to {top['value']}"
    )
    if "probes" in summary:
        best = max(summary["probes"], key=lambda r: r["r2"])
        line += f" | best probe {best['label']} from {best['site']} (R^2 {best['r2']:.2f})"
    if "ablations" in summary:
        worst = min(summary["ablations"], key=lambda r: r["change"])
        line += f" | largest return change {worst['change']:+.0f} (ablating {worst['name']})"
    return line + f" | {summary['wall_seconds']:.0f} s"


def _attribution_section(report, rollout, summary, features) -> None:
    from tdhook_rl.viz import attribution_over_time, feature_shares

    report.section(
        "Attribution: policy vs value",
        f"{summary['method']}: attribution of the log-probability of the action taken "
        "(policy head) and of "
        "the state value (value head) with respect to the 9 observation entries, at every "
        "step, from one batched pass per step.",
    )
    first = rollout[0][: min(300, rollout.shape[-1])]
    report.figure(
        attribution_over_time(
            first,
            feature_names=features,
            title="Attribution along the first trajectory",
            shared_scale=False,
        ),
        "attribution_over_time",
        "Features x steps, one panel per head, each on its own colour scale (the heads are in "
        "different units); red raises "
        "the head's output, blue lowers it.",
    )
    report.figure(
        feature_shares(rollout, feature_names=features),
        "feature_shares",
        "Each feature's share of the mean |attribution|, per head.",
    )
    rows, shares = [], {}
    for head in ("policy", "value"):
        a = rollout["attribution", head, "observation"].abs().reshape(-1, len(features)).mean(0)
        shares[head] = (a / a.sum()).tolist()
        if ("attribution", head, "completeness_delta") in rollout.keys(True):  # path methods
            delta = rollout["attribution", head, "completeness_delta"].abs().max()
            summary[f"{head}_max_abs_completeness_delta"] = float(delta)
    for i, f in enumerate(features):
        rows.append([f, 100 * shares["policy"][i], 100 * shares["value"][i]])
    report.table(["feature", "policy share (%)", "value share (%)"], rows)
    summary["attribution_share"] = {
        head: dict(zip(features, s, strict=True)) for head, s in shares.items()
    }


def _probe_section(report, rollout, module, names, summary, opts, probe_scores) -> None:
    report.section(
        "Probes: what the hidden layers encode",
        "Ridge probes from each hidden layer to the simulator state, scored by R^2 on held-out "
        "episodes; dashed: the same probes on a randomly initialized copy of the network.",
    )
    with warnings.catch_warnings():
        # the policy's state-independent scale is a bare parameter: it keeps its value
        warnings.filterwarnings("ignore", message="randomized_copy: no reset_parameters")
        control_net = Recorded(
            randomized_copy(module, seed=opts.seed), {n: s for s, n in names.items()}
        )
    with torch.no_grad():
        control = control_net(rollout.exclude("activations").clone())
    results = fit_probes(
        rollout, list(names.values()), LABELS, control=control, held_out=0.25, seed=opts.seed
    )
    report.figure(
        probe_scores(results.rows, score="r2", control="control_r2"),
        "probe_r2",
        "Held-out R^2 by layer and label.",
    )
    report.table(
        ["layer", "label", "R^2", "random-network R^2"],
        [[r["site"], r["label"], r["r2"], r["control_r2"]] for r in results.rows],
    )
    summary["probes"] = [
        {k: r[k] for k in ("site", "label", "r2", "control_r2", "n_train", "n_test")}
        for r in results.rows
    ]


def _ablation_section(report, agent, sites, names, summary, opts, progress, plot) -> None:
    report.section(
        "Ablations: which units the behaviour depends on",
        f"Each group of hidden units of the actor set to zero, {opts.episodes} paired episodes "
        f"of up to {opts.ablation_steps} steps "
        "from the same seeds with and without the ablation; bars: mean change in return with "
        "95% bootstrap intervals.",
    )
    env = agent.make_env(opts.episodes, seed=opts.seed, device=opts.device)
    jobs = []
    for site in sites:
        width = agent.actor_critic.get_submodule(site.rsplit(".", 1)[0])[
            int(site.rsplit(".", 1)[1]) - 1
        ].out_features
        size = max(1, width // opts.groups)
        for g in range(0, width, size):
            units = list(range(g, min(g + size, width)))
            jobs.append((f"{names[site]} units {units[0]}-{units[-1]}", site, units))
    effects, rows = {}, []
    for label, site, units in tqdm(jobs, desc="ablations", disable=not progress, leave=False):
        effect = intervention_effect(
            env,
            agent.actor,
            {_actor_path(site): Ablate(units=units)},
            episodes=opts.episodes,
            seed=opts.seed,
            max_steps=opts.ablation_steps,
        )
        effects[label] = effect
        s = effect.summary["returns"]
        rows.append([label, s["clean"], s["intervened"], s["change"], s["low"], s["high"]])
    env.close()
    report.figure(plot(effects), "ablation_effects", "Change in return per ablated unit group.")
    report.table(
        ["ablation", "clean return", "ablated return", "change", "95% low", "95% high"], rows
    )
    summary["ablations"] = [
        dict(zip(["name", "clean", "ablated", "change", "low", "high"], r, strict=True))
        for r in rows
    ]


def _actor_path(site: str) -> str:
    """A path in ``TensorDictSequential(actor, critic)`` -> the same layer in ``actor``."""
    return site.removeprefix("module.0.")
