"""Attribution patching (AtP) against exact activation patching, shipped double pendulum.

Clean: observations of a deterministic rollout of the shipped agent (8 copies x 64 steps);
corrupted: the upright state at rest for every sample; heads: the policy's ``loc`` and
``state_value``. Case "every site": the 10 Linear and Tanh layers of actor and critic, exact
``activation_patching`` (a clean pass, a corrupted pass and one patched pass per site) against
``attribution_patching`` (a clean pass, a corrupted pass, one batched backward). Case "every
unit": the 256 units of the 4 hidden Tanh layers, one exact patched pass per unit against one
``attribution_patching(per_unit=True)``. The estimate is not the exact value (that is the
point of the comparison), so there is no agreement check; the `rho` columns give Spearman's
correlation of the estimate with the exact effects per head (over sites; over units of the
mean per-unit effect).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, set_interaction_type
from torch import nn

from benchmarks.harness import (
    BenchmarkResult,
    CaseResult,
    ContestantResult,
    RunConfig,
    Tolerance,
    time_interleaved,
)

NAME = "atp"
HEADS = {"policy": "loc", "value": "state_value"}
UPRIGHT = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # raw observation, poles up, at rest


def _data(envs: int, steps: int, seed: int):
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from tdhook_rl import agents

    agent = agents.load("double_pendulum")
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = agent.make_env(envs, seed=seed).rollout(
            steps, agent.actor, break_when_any_done=False
        )
    clean = rollout.select("observation")
    norm = agent.obs_norm
    upright = ((torch.tensor(UPRIGHT) - norm["loc"]) / norm["scale"]).clamp(
        -norm["clip"], norm["clip"]
    )
    corrupted = clean.apply(lambda x: upright.expand_as(x).clone())
    return agent, clean, corrupted


def _unit_loop(module, clean, corrupted, sites: list[str]) -> torch.Tensor:
    """``[n_heads, sum of units]``: exact mean effect of patching each unit alone."""
    import tdhook_rl as thr
    from tdhook_rl.targets import as_targets, per_sample

    targets = as_targets(HEADS, module, kind="head")

    def heads(td: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        return torch.stack(
            [per_sample(t(td, reference), td.batch_size, t) for t in targets.values()]
        )

    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        reference = module(clean.copy())
        base = heads(module(corrupted.copy()), reference)
        effects = []
        for site in sites:
            a_clean = thr.get(module, clean, site)
            if not isinstance(a_clean, torch.Tensor):
                raise TypeError(f"site {site!r} gives several tensors")
            for unit in range(a_clean.shape[-1]):

                def patch(a, td, a_clean=a_clean, unit=unit):
                    a = a.clone()
                    a[..., unit] = a_clean[..., unit]
                    return a

                out = thr.set(module, corrupted, {site: patch})
                effects.append((heads(out, reference) - base).flatten(1).mean(1))
    return torch.stack(effects, -1)


def run(config: RunConfig) -> BenchmarkResult:
    import tdhook_rl as thr
    from tdhook_rl.latent.attribution_patching import spearman
    from tdhook_rl.report.double_pendulum import hidden_layers

    envs, steps = (4, 32) if config.quick else (8, 64)
    warmup, repeats = (1, 3) if config.quick else (2, 7)
    unit_repeats = 1 if config.quick else 3  # the exact unit loop takes seconds per call
    agent, clean, corrupted = _data(envs, steps, config.seed)
    hidden = [layer.path for layer in hidden_layers(agent)]  # the 4 Tanh layers
    if config.quick:
        hidden = hidden[-1:]  # critic h2 alone: 64 exact passes
    module = agent.actor_critic.to(config.device)
    clean, corrupted = clean.to(config.device), corrupted.to(config.device)
    # every layer (the policy's scale module outputs a tuple, which patching cannot take)
    sites = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear | nn.Tanh)]

    def exact_sites() -> torch.Tensor:
        return thr.activation_patching(module, clean, corrupted, HEADS, sites).restored

    def atp_sites() -> torch.Tensor:
        return thr.attribution_patching(module, clean, corrupted, HEADS, sites).estimate

    def exact_units() -> torch.Tensor:
        return _unit_loop(module, clean, corrupted, hidden)

    def atp_units() -> torch.Tensor:
        result = thr.attribution_patching(module, clean, corrupted, HEADS, hidden, per_unit=True)
        units = result.units or {}
        return torch.cat([units[s].flatten(1, -2).mean(1) for s in hidden], -1)

    cases = []
    for label, pair in (
        (f"every site ({len(sites)})", (exact_sites, atp_sites)),
        (f"every unit ({64 * len(hidden)} of {len(hidden)} layers)", (exact_units, atp_units)),
    ):
        operations: dict[str, Callable[[], torch.Tensor]] = dict(
            zip(("exact", "atp"), pair, strict=True)
        )
        exact, estimate = (op().cpu() for op in pair)  # the first call, also a warm-up
        errors: dict[str, str] = {}
        units = label.startswith("every unit")
        timings = time_interleaved(
            operations,
            0 if units else warmup,
            unit_repeats if units else repeats,
            config.device,
            errors=errors,
        )
        rows = []
        for name in operations:
            row = ContestantResult(name, "error" if name in errors else "ok", errors.get(name, ""))
            row.timing = timings.get(name)
            rows.append(row)
        # over sites the columns are heads ([n_sites, n_heads]); over units, rows are heads
        by_head = (estimate, exact) if units else (estimate.T, exact.T)
        rows[1].extras = {
            f"rho {head}": spearman(by_head[0][j], by_head[1][j]) for j, head in enumerate(HEADS)
        }
        cases.append(CaseResult(label, {"batch": [envs, steps]}, rows))
    return BenchmarkResult(
        name=NAME,
        title="Attribution patching vs exact activation patching (double pendulum)",
        description=(
            "`exact`: activation patching, one patched forward pass per site (or per unit); "
            "`atp`: attribution patching, one clean pass, one corrupted pass and one batched "
            "backward for every site (or unit) and both heads. `rho <head>`: Spearman "
            "correlation of AtP's estimate with the exact effects (no agreement check: AtP is a "
            "first-order estimate)."
        ),
        settings={
            "batch": f"{envs} copies x {steps} steps",
            "warmup": warmup,
            "repeats": f"{repeats} (units: {unit_repeats}, no warm-up beyond the first call)",
        },
        reference="exact",
        tolerance=Tolerance(),
        cases=cases,
        focus="atp",
    )
