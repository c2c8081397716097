"""Multi-target integrated-gradients contestants.

Each ``build_*`` function takes the network, the observations, the columns of
:meth:`ActorCritic.stacked` to explain, the number of steps and the quadrature rule, does
all set-up that a user would do once (constructing explainers, preparing contexts), and
returns an operation that attributes every target for the whole batch and returns the
attributions as [n_targets, batch, *obs_shape] (zero baseline, attributions multiplied by
``input - baseline`` as captum does by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import numpy as np
import torch
from tensordict import TensorDict

from benchmarks.harness import CaseResult, ContestantUnavailable, Operation, Tolerance, run_case
from benchmarks.models import ActorCritic

Builder = Callable[[ActorCritic, torch.Tensor, Sequence[int], int, str], Operation]

TOLERANCE = Tolerance(atol_scaled=1e-5, rtol=1e-4)

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(rule: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alpha`` in [0, 1] and weights of an ``n_steps``-point rule on [0, 1] (float64)."""
    if rule == "gausslegendre":
        nodes, legendre = np.polynomial.legendre.leggauss(n_steps)  # on [-1, 1]
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(legendre / 2)
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    weights = torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return torch.linspace(0, 1, n_steps, dtype=torch.float64), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[rule]
    return (torch.arange(n_steps, dtype=torch.float64) + offset) / n_steps, weights


def build_captum(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], n_steps: int, rule: str
) -> Operation:
    """captum's ordinary usage: one ``attribute(target=i)`` call per target."""
    try:
        from captum.attr import IntegratedGradients
    except ImportError as exc:
        raise ContestantUnavailable(f"captum: {exc}") from exc
    explainer = IntegratedGradients(net.stacked)

    def operation() -> torch.Tensor:
        attributions = [
            explainer.attribute(obs, baselines=0.0, target=column, n_steps=n_steps, method=rule)
            for column in columns
        ]
        return torch.stack(attributions)

    return operation


def _tdhook_context(net: ActorCritic, n_steps: int, rule: str):  # -> tdhook HookingContext
    try:
        from tdhook.attribution import IntegratedGradients
    except ImportError as exc:
        raise ContestantUnavailable(f"tdhook: {exc}") from exc

    def select_target(outputs: TensorDict, extra: TensorDict) -> TensorDict:
        # outputs: (*batch, n_steps) with logits (.., n_logits) and state_value (.., 1);
        # extra["target_index"]: (*batch,), one stacked column per row.
        stacked = torch.cat([outputs["logits"], outputs["state_value"]], dim=-1)
        index = extra["target_index"][..., None, None].expand(*stacked.shape[:-1], 1)
        return TensorDict(
            score=stacked.gather(-1, index).squeeze(-1), batch_size=outputs.batch_size
        )

    method = IntegratedGradients(
        init_attr_targets=select_target,
        additional_init_keys=["target_index"],
        multiply_by_inputs=True,  # tdhook's default is False; captum's (and ours) is True
        n_steps=n_steps,
        method=rule,
    )
    return method.prepare(net.td_module)


def build_tdhook(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], n_steps: int, rule: str
) -> Operation:
    """tdhook 0.3, one call for all targets.

    tdhook differentiates the sum of whatever ``init_attr_targets`` returns, so one call
    yields one target per row. Its per-row label mechanism (``additional_init_keys`` plus
    a selecting ``init_attr_targets``, as ``init_attr_targets_with_labels`` does) lets one
    call cover every target: the batch is repeated once per target, (B,) -> (T, B), and row
    (t, b) selects column t.
    """
    context = _tdhook_context(net, n_steps, rule)
    n_targets = len(columns)
    expanded = obs.expand(n_targets, *obs.shape)
    index = torch.as_tensor(list(columns), device=obs.device)[:, None].expand(expanded.shape[:2])

    def operation() -> torch.Tensor:
        data = TensorDict(
            {
                "observation": expanded,
                ("baseline", "observation"): torch.zeros_like(expanded),
                "target_index": index,
            },
            batch_size=expanded.shape[:2],
            device=obs.device,
        )
        with context as hooked:
            out = hooked(data)
        return out["attr", "observation"]

    return operation


def build_tdhook_loop(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], n_steps: int, rule: str
) -> Operation:
    """tdhook 0.3 with a Python loop: one call per target inside one open context."""
    context = _tdhook_context(net, n_steps, rule)
    batch = obs.shape[:1]
    baseline = torch.zeros_like(obs)
    indices = [torch.full(batch, column, device=obs.device) for column in columns]

    def operation() -> torch.Tensor:
        attributions = []
        with context as hooked:
            for index in indices:
                data = TensorDict(
                    {
                        "observation": obs,
                        ("baseline", "observation"): baseline,
                        "target_index": index,
                    },
                    batch_size=batch,
                    device=obs.device,
                )
                attributions.append(hooked(data)["attr", "observation"])
        return torch.stack(attributions)

    return operation


def build_floor(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], n_steps: int, rule: str
) -> Operation:
    """Hand-written floor: one forward over all path points, one batched backward."""
    alphas, weights = quadrature(rule, n_steps)
    alphas = alphas.to(obs.device, obs.dtype).view(n_steps, *([1] * obs.dim()))
    weights = weights.to(obs.device, obs.dtype)
    n_out = net.n_logits + 1
    # (T, n_out) one-hot rows, broadcast (not copied) over the S*B path points
    one_hot = torch.eye(n_out, device=obs.device, dtype=obs.dtype)[list(columns)]
    cotangents = one_hot[:, None, :].expand(len(columns), n_steps * obs.shape[0], n_out)

    def operation() -> torch.Tensor:
        # (B, *obs) -> (S, B, *obs): points on the straight path from the zero baseline
        path = (alphas * obs).requires_grad_(True)
        out = net.stacked(path.flatten(0, 1))  # (S*B, n_out)
        (grads,) = torch.autograd.grad(out, path, cotangents, is_grads_batched=True)
        # (T, S, B, *obs) -> (T, B, *obs): quadrature over the path, then times (x - 0)
        return torch.tensordot(weights, grads, dims=([0], [1])) * obs

    return operation


def build_floor_jvp(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], n_steps: int, rule: str
) -> Operation:
    """Forward-mode floor: one forward pass carrying one tangent per input feature.

    Cheaper than the reverse floor when the observation has fewer features than there
    are targets (9 < 17 here): the Jacobian comes out in ``numel(obs)`` forward-mode
    directions, batched with ``torch.func.vmap`` over ``torch.func.jvp``.
    """
    alphas, weights = quadrature(rule, n_steps)
    alphas = alphas.to(obs.device, obs.dtype).view(n_steps, *([1] * obs.dim()))
    weights = weights.to(obs.device, obs.dtype)
    n_points, n_features = n_steps * obs.shape[0], obs[0].numel()
    obs_shape = obs.shape[1:]
    # (D, *obs) basis, broadcast (not copied) over the S*B path points: (D, S*B, *obs)
    basis = torch.eye(n_features, device=obs.device, dtype=obs.dtype).view(-1, *obs_shape)
    tangents = basis[:, None].expand(n_features, n_points, *obs_shape)
    index = torch.as_tensor(list(columns), device=obs.device)

    def directional(path: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(net.stacked, (path,), (tangent,))[1]

    def operation() -> torch.Tensor:
        path = (alphas * obs).flatten(0, 1)  # (S*B, *obs)
        jacobian = torch.func.vmap(directional, in_dims=(None, 0))(path, tangents)
        # (D, S*B, n_out) -> (T, S, B, D) -> (T, B, D) -> (T, B, *obs), times (x - 0)
        jacobian = jacobian[..., index].permute(2, 1, 0).unflatten(1, (n_steps, -1))
        weighted = torch.tensordot(weights, jacobian, dims=([0], [1]))
        return weighted.unflatten(-1, obs_shape) * obs

    return operation


def build_tdhook_rl(
    net: ActorCritic,
    obs: torch.Tensor,
    columns: Sequence[int],
    n_steps: int,
    rule: str,
    strategy: Literal["auto", "reverse", "forward", "replicate"] = "auto",
    cuda_graph: bool = False,
    chunk_size: int | None = None,
) -> Operation:
    """tdhook_rl: one ``Attributed`` module explaining every target in one call.

    ``strategy`` is ``Attributed``'s, ``chunk_size`` the method's; ``cuda_graph`` wraps it in
    tensordict's ``CudaGraphModule`` (captured after 2 eager calls, then replayed: no
    per-kernel launch cost on the host)."""
    if cuda_graph and obs.device.type != "cuda":
        raise ContestantUnavailable("CUDA graphs need a CUDA device")
    try:
        import tdhook_rl as thr
        from tdhook_rl.attribution import IntegratedGradients
        from tdhook_rl.targets import Index

        attributed = thr.Attributed
    except (ImportError, AttributeError) as exc:  # absent, or its API not written yet
        raise ContestantUnavailable(f"tdhook_rl API incomplete ({exc})") from exc
    targets: dict[str, object] = {}
    for column in columns:
        name = net.target_name(column)
        targets[name] = "state_value" if column == net.n_logits else Index("logits", column)
    explained = attributed(
        net.td_module,
        IntegratedGradients(n_steps=n_steps, rule=rule, baseline=0.0, chunk_size=chunk_size),
        inputs=["observation"],
        targets=targets,
        strategy=strategy,
    )
    if cuda_graph:
        from tensordict.nn import CudaGraphModule

        explained = CudaGraphModule(explained, warmup=2)
    names = list(targets)

    def operation() -> torch.Tensor:
        td = TensorDict(observation=obs, batch_size=obs.shape[:1], device=obs.device)
        out = explained(td)
        return torch.stack([out["attribution", name, "observation"] for name in names])

    return operation


CONTESTANTS: dict[str, Builder] = {
    "captum": build_captum,
    "tdhook": build_tdhook,
    "tdhook-loop": build_tdhook_loop,
    "floor": build_floor,
    "floor-jvp": build_floor_jvp,
    "tdhook_rl": build_tdhook_rl,
    "tdhook_rl-reverse": partial(build_tdhook_rl, strategy="reverse"),
    "tdhook_rl-cudagraph": partial(build_tdhook_rl, cuda_graph=True),
}


def run_ig_case(
    label: str,
    net: ActorCritic,
    obs: torch.Tensor,
    columns: Sequence[int],
    contestants: Sequence[str],
    n_steps: int,
    rule: str,
    warmup: int,
    repeats: int,
    budget_s: float | None = None,
) -> CaseResult:
    """Build the named contestants on one setting, check them against captum, time them
    (``budget_s``: see :func:`benchmarks.harness.run_case`)."""
    builders = {
        name: partial(CONTESTANTS[name], net, obs, columns, n_steps, rule) for name in contestants
    }
    params = {
        "n_targets": len(columns),
        "obs_shape": list(net.obs_shape),
        "batch": obs.shape[0],
        "n_steps": n_steps,
        "rule": rule,
    }
    return run_case(
        label, params, builders, "captum", TOLERANCE, warmup, repeats, obs.device, budget_s
    )
