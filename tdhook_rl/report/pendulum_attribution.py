"""The double-pendulum report's attribution section: what each head is explained with, from
which baseline (in physical units), how large the attributions are, and, where they are a
measurement rather than rounding noise, which features each head rests on, in the
transient after a reset and in the steady state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase

from tdhook_rl.attributed import DELTA_KEY
from tdhook_rl.attribution import AttributionMethod, IntegratedGradients, resolve_method
from tdhook_rl.attribution.noise import is_signed, rounding_level
from tdhook_rl.targets import ActionLoc, ActionLogProb, as_targets, per_sample

__all__ = [
    "BASELINES",
    "POLICY_TARGETS",
    "TRANSIENT_STEPS",
    "UPRIGHT",
    "attribution_section",
    "ig_baseline",
    "method_text",
    "pendulum_method",
    "policy_target",
]

#: The raw observation of the upright equilibrium: cart at the centre, both poles upright
#: (sines 0, cosines 1), at rest, no constraint force.
UPRIGHT: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
#: The steps after a reset counted as the transient (the controller catching the poles).
TRANSIENT_STEPS = 100
BASELINES = ("upright", "mean")
POLICY_TARGETS = ("loc", "log_prob")


def policy_target(name: str) -> tuple[Any, str]:
    """``(target, description)`` of the policy head.

    ``"loc"`` (default of the command): the location of the action distribution, the
    pre-tanh mean of the cart force (the deterministic action is ``tanh(loc)``); it is the
    right target for deterministic rollouts, where the log-probability of the mode action
    does not depend on the state. ``"log_prob"``: the log-probability of the action taken.
    """
    if name == "loc":
        return (
            ActionLoc(),
            "the location of the action distribution (the pre-tanh mean of the cart force; "
            "the deterministic action is tanh(loc))",
        )
    if name == "log_prob":
        return ActionLogProb(), "the log-probability of the action taken"
    raise ValueError(f"unknown policy target {name!r}; choose one of {list(POLICY_TARGETS)}")


def ig_baseline(kind: str, obs_norm: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The IG baseline in the network's (standardized) units and in physical units.

    ``"upright"``: the upright equilibrium (:data:`UPRIGHT`) standardized with the agent's
    observation statistics; ``"mean"``: zero in standardized units, i.e. the mean observation
    of the agent's training data (``obs_norm["loc"]``).

    Examples:
        >>> norm = {"loc": torch.full((9,), 0.5), "scale": torch.full((9,), 2.0)}
        >>> ig_baseline("upright", norm)[0][:4].tolist()
        [-0.25, -0.25, -0.25, 0.25]
    """
    loc = torch.as_tensor(obs_norm["loc"], dtype=torch.float32).cpu()
    scale = torch.as_tensor(obs_norm["scale"], dtype=torch.float32).cpu()
    if kind == "upright":
        raw = torch.tensor(UPRIGHT)
        standardized = (raw - loc) / scale
        clip = obs_norm.get("clip")
        if clip is not None:
            standardized = standardized.clamp(-clip, clip)
        return standardized, raw
    if kind == "mean":
        return torch.zeros_like(loc), loc.clone()
    raise ValueError(f"unknown IG baseline {kind!r}; choose one of {list(BASELINES)}")


def pendulum_method(
    name: str, n_steps: int, baseline: torch.Tensor, device: torch.device | str
) -> AttributionMethod:
    """The method called ``name``; integrated gradients get ``n_steps``, and every method with
    a baseline (IG, the perturbation methods) gets ``baseline``."""
    method = resolve_method(name)
    kwargs: dict[str, Any] = {}
    if isinstance(method, IntegratedGradients):
        kwargs["n_steps"] = n_steps
    if hasattr(method, "baseline"):
        kwargs["baseline"] = baseline.to(device)
    return type(method)(**kwargs) if kwargs else method


def method_text(method: AttributionMethod, baseline: str) -> str:
    """``repr(method)`` with the baseline tensor replaced by its name (``"upright"``)."""
    if isinstance(method, IntegratedGradients):
        return (
            f"IntegratedGradients(n_steps={method.n_steps}, rule={method.rule!r}, "
            f"baseline={baseline!r})"
        )
    if hasattr(method, "baseline"):
        return f"{type(method).__name__}(baseline={baseline!r})"
    return repr(method)


def _head_numbers(
    rollout: TensorDictBase, head: str, output: torch.Tensor, n_features: int
) -> dict[str, Any]:
    a = rollout["attribution", head, "observation"].detach().float().cpu()
    output = output.detach().float().cpu()
    noise = rounding_level(a, output, rollout.batch_dims)
    steps = a.shape[rollout.batch_dims - 1]
    flat = a.abs().reshape(-1, steps, n_features)  # (copies, T, features)
    numbers: dict[str, Any] = {
        "rounding_level": noise,
        "mean_abs_attribution": float(flat.sum(-1).mean()),
    }
    cut = min(TRANSIENT_STEPS, steps)
    parts = {"all": flat, "transient": flat[:, :cut], "steady": flat[:, cut:]}
    shares = {}
    for part, values in parts.items():
        if values.shape[1] == 0 or noise:
            continue
        mean = values.reshape(-1, n_features).mean(0)
        shares[part] = (mean / mean.sum()).tolist() if float(mean.sum()) > 0 else None
    numbers["shares"] = shares
    if (("attribution", head, DELTA_KEY)) in rollout.keys(True):
        delta = rollout["attribution", head, DELTA_KEY].abs().max()
        numbers["max_abs_completeness_delta"] = float(delta)
    return numbers


def attribution_section(
    report: Any,
    rollout: TensorDictBase,
    summary: dict[str, Any],
    features: Sequence[str],
    method: AttributionMethod,
    policy: tuple[Any, str],
    baseline: tuple[str, torch.Tensor, torch.Tensor] | None,
    module: torch.nn.Module,
) -> None:
    """Writes the section and fills ``summary``: per head ``attribution_magnitude``,
    ``attribution_rounding_level``, ``attribution_share`` (whole rollout; only heads that
    are not rounding noise), ``attribution_share_transient`` / ``_steady`` and, for IG,
    ``ig_baseline`` and the completeness deltas."""
    from tdhook_rl.viz import attribution_over_time, feature_shares

    target, policy_text = policy
    with torch.no_grad():  # each head's own value at every step, for the rounding check
        outputs = {
            head: per_sample(bound(rollout, rollout), rollout.batch_size, bound)
            for head, bound in as_targets(
                {"policy": target, "value": "state_value"}, module
            ).items()
        }
    described = method_text(method, baseline[0] if baseline else "")
    report.section(
        "Attribution: policy vs value",
        f"{described}: attribution of {policy_text} (policy head) and of the state value (value "
        f"head) to the {len(features)} observation entries, at every step, from one batched "
        "pass per step.",
    )
    if baseline is not None:
        kind, standardized, raw = baseline
        report.paragraph(
            f"Baseline: the {_baseline_text(kind)}"
            + (
                "; attributions of a step sum to the head's output there minus its output at "
                "this baseline (the completeness delta measures how closely)"
                if method.has_convergence_delta
                else ", the value an observation entry is replaced by when it is removed"
            )
            + ". In physical units and in the network's standardized units:"
        )
        report.table(
            ["feature", "baseline (physical)", "baseline (standardized)"],
            [[f, float(r), float(s)] for f, r, s in zip(features, raw, standardized, strict=True)],
        )
        summary["ig_baseline"] = {
            "kind": kind,
            "physical": dict(zip(features, raw.tolist(), strict=True)),
            "standardized": standardized.tolist(),
        }
    numbers = {h: _head_numbers(rollout, h, k, len(features)) for h, k in outputs.items()}
    signed = is_signed(method)
    sign_text = (
        "red raises the head's output, blue lowers it"
        if signed
        else f"{method!r} gives magnitudes only: brighter is larger, there is no sign"
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
        f"different units); {sign_text}.",
    )
    ranked = [h for h, n in numbers.items() if not n["rounding_level"]]
    for head, n in numbers.items():
        if n["rounding_level"]:
            report.paragraph(
                f"The {head} head's attributions are at the rounding level of its output (mean "
                f"summed |attribution| {n['mean_abs_attribution']:.2g}): they are float noise, "
                "not a dependence on the observation, so they are neither ranked nor shared "
                "out below. For a deterministic policy, explain the action's location "
                "(--policy-target loc) or sampled actions."
            )
    if ranked:
        report.figure(
            feature_shares(rollout, ranked, feature_names=features),
            "feature_shares",
            "Each feature's share of the mean |attribution|, per head (whole rollout).",
        )
    _shares_table(report, numbers, features, rollout.shape[-1])
    for head, n in numbers.items():
        if "max_abs_completeness_delta" in n:
            summary[f"{head}_max_abs_completeness_delta"] = n["max_abs_completeness_delta"]
    summary["attribution_magnitude"] = {h: n["mean_abs_attribution"] for h, n in numbers.items()}
    summary["attribution_rounding_level"] = {h: n["rounding_level"] for h, n in numbers.items()}
    for part, suffix in (("all", ""), ("transient", "_transient"), ("steady", "_steady")):
        summary[f"attribution_share{suffix}"] = {
            h: dict(zip(features, n["shares"][part], strict=True))
            for h, n in numbers.items()
            if n["shares"].get(part) is not None
        }


def _baseline_text(kind: str) -> str:
    if kind == "upright":
        return "upright equilibrium (cart centred, both poles upright and at rest)"
    return "mean observation of the agent's training data (zero in standardized units)"


def _shares_table(report: Any, numbers: dict[str, Any], features: Sequence[str], steps: int):
    cut = min(TRANSIENT_STEPS, steps)
    labels = {"all": "all steps", "transient": f"steps < {cut}", "steady": f"steps >= {cut}"}
    header, columns = ["feature"], []
    for head, n in numbers.items():
        for part, label in labels.items():
            if n["shares"].get(part) is not None:
                header.append(f"{head} share, {label} (%)")
                columns.append([100 * v for v in n["shares"][part]])
    if columns:
        report.table(header, [[f, *(c[i] for c in columns)] for i, f in enumerate(features)])
    report.table(
        ["head", "mean summed |attribution| per step", "rounding level"],
        [
            [h, n["mean_abs_attribution"], "yes" if n["rounding_level"] else "no"]
            for h, n in numbers.items()
        ],
    )


def top_feature(summary: dict[str, Any], head: str) -> str:
    """How the summary line names what ``head`` rests on: the steady-state top feature, or
    that its attributions are rounding noise."""
    if summary.get("attribution_rounding_level", {}).get(head):
        return f"{head} attributions at rounding level (not ranked)"
    for key in ("attribution_share_steady", "attribution_share"):
        shares = summary.get(key, {}).get(head)
        if shares:
            where = " in the steady state" if key.endswith("steady") else ""
            return f"{head} rests most on {max(shares, key=shares.get)}{where}"
    return f"{head}: no attribution"
