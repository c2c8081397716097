"""Perturbation attribution of 17 targets: exact Shapley values and occlusion.

The actor-critic of ``multi_target_ig`` (9 observation features, a 256-256 Tanh trunk, 16
logits and the value), batch 64, zero baseline. Two cases, every contestant doing the whole
job (all 17 targets, whole batch) per timed call:

* exact Shapley values of the 9 features, from all 2^9 = 512 coalitions;
* occlusion with a window of 2 features and stride 1 (8 placements), captum's semantics.

The reference is ``loop``: one forward per perturbation and per target, the cost of evaluating
perturbations one by one as captum does by default (``perturbations_per_eval=1``). captum's
occlusion is timed against it; captum has no exact-Shapley method cheaper than
``ShapleyValues``, which walks all 9! = 362,880 orderings (3.3 million evaluations per target):
not run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from tensordict import TensorDict

from benchmarks.harness import (
    BenchmarkResult,
    ContestantUnavailable,
    Operation,
    RunConfig,
    Tolerance,
    run_case,
)
from benchmarks.models import ActorCritic, actor_critic, observations

NAME = "perturbation"
BATCH = 64
OBS_SHAPE = (9,)
N_LOGITS = 16
HIDDEN = 256
WINDOW = 2
BUDGET_S = 10.0
TOLERANCE = Tolerance(atol_scaled=1e-5, rtol=1e-4)

Builder = Callable[[ActorCritic, torch.Tensor, Sequence[int]], Operation]
N_PLACEMENTS = OBS_SHAPE[0] - WINDOW + 1


def _tdhook_rl(net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], method) -> Operation:
    try:
        import tdhook_rl as thr
        from tdhook_rl.targets import Index
    except ImportError as exc:
        raise ContestantUnavailable(f"tdhook_rl: {exc}") from exc
    targets: dict[str, object] = {
        net.target_name(c): "state_value" if c == net.n_logits else Index("logits", c)
        for c in columns
    }
    explained = thr.Attributed(net.td_module, method, inputs=["observation"], targets=targets)
    names = list(targets)

    def operation() -> torch.Tensor:
        td = TensorDict(observation=obs, batch_size=obs.shape[:1], device=obs.device)
        out = explained(td)
        return torch.stack([out["attribution", name, "observation"] for name in names])

    return operation


# --- exact Shapley ---------------------------------------------------------------------------


def _coalitions(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All coalitions ``(2^n, n)`` bool and the Shapley weights ``(n, 2^n)``."""
    present = torch.tensor(list(itertools.product([False, True], repeat=n)), device=device)
    size = present.sum(1)
    w = torch.tensor(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
        + [0.0],
        device=device,
    )
    coef = torch.where(present.T, w[(size - 1).clamp_min(0)], -w[size])
    return present, coef


def build_shapley_loop(net: ActorCritic, obs: torch.Tensor, columns: Sequence[int]) -> Operation:
    """One forward per coalition and per target, then the Shapley weights."""
    present, coef = _coalitions(obs.shape[-1], obs.device)

    def operation() -> torch.Tensor:
        with torch.no_grad():
            out = []
            for column in columns:
                values = torch.stack(
                    [net.stacked(torch.where(z, obs, 0.0))[:, column] for z in present]
                )  # (2^n, B)
                out.append(coef @ values)  # (n, B)
            return torch.stack(out).transpose(1, 2)  # (T, B, n)

    return operation


def build_shapley_floor(net: ActorCritic, obs: torch.Tensor, columns: Sequence[int]) -> Operation:
    """Hand-written floor: one forward over all coalitions, one product with the weights."""
    present, coef = _coalitions(obs.shape[-1], obs.device)
    index = torch.as_tensor(list(columns), device=obs.device)

    def operation() -> torch.Tensor:
        with torch.no_grad():
            # (2^n, 1, n) x (B, n) -> (2^n, B, n) -> (2^n * B, 17) -> (2^n, B, T)
            inputs = torch.where(present[:, None], obs, 0.0)
            values = net.stacked(inputs.flatten(0, 1))[:, index].unflatten(0, inputs.shape[:2])
            return torch.einsum("nc,cbt->tbn", coef, values)

    return operation


def build_shapley_tdhook_rl(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int]
) -> Operation:
    from tdhook_rl.attribution import ExactShapley

    return _tdhook_rl(net, obs, columns, ExactShapley())


def build_shapley_captum(net: ActorCritic, obs: torch.Tensor, columns: Sequence[int]) -> Operation:
    raise ContestantUnavailable(
        "captum.attr.ShapleyValues walks all 9! orderings (3.3M evaluations per target)"
    )


# --- occlusion -------------------------------------------------------------------------------


def build_occlusion_captum(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int], per_eval: int = 1
) -> Operation:
    """captum's ordinary usage: one ``attribute(target=i)`` call per target."""
    try:
        from captum.attr import Occlusion
    except ImportError as exc:
        raise ContestantUnavailable(f"captum: {exc}") from exc
    explainer = Occlusion(net.stacked)

    def operation() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(
                [
                    explainer.attribute(
                        obs,
                        sliding_window_shapes=(WINDOW,),
                        strides=1,
                        baselines=0.0,
                        target=column,
                        perturbations_per_eval=per_eval,
                    )
                    for column in columns
                ]
            )

    return operation


def build_occlusion_loop(net: ActorCritic, obs: torch.Tensor, columns: Sequence[int]) -> Operation:
    """One forward per placement and per target, then the mean over covering placements."""
    n = obs.shape[-1]
    windows = torch.zeros(N_PLACEMENTS, n, dtype=torch.bool, device=obs.device)
    for p in range(N_PLACEMENTS):
        windows[p, p : p + WINDOW] = True
    cover = windows.sum(0).to(obs.dtype)

    def operation() -> torch.Tensor:
        with torch.no_grad():
            out = []
            for column in columns:
                full = net.stacked(obs)[:, column]
                gains = torch.stack(
                    [full - net.stacked(torch.where(w, 0.0, obs))[:, column] for w in windows]
                )  # (P, B)
                out.append(gains.T @ windows.to(obs.dtype) / cover)  # (B, n)
            return torch.stack(out)

    return operation


def build_occlusion_tdhook_rl(
    net: ActorCritic, obs: torch.Tensor, columns: Sequence[int]
) -> Operation:
    from tdhook_rl.attribution import Occlusion

    return _tdhook_rl(net, obs, columns, Occlusion(window=(WINDOW,), strides=1))


SHAPLEY: dict[str, Builder] = {
    "captum": build_shapley_captum,
    "loop": build_shapley_loop,
    "floor": build_shapley_floor,
    "tdhook_rl": build_shapley_tdhook_rl,
}
OCCLUSION: dict[str, Builder] = {
    "loop": build_occlusion_loop,
    "captum": build_occlusion_captum,
    "captum-batched": partial(build_occlusion_captum, per_eval=N_PLACEMENTS),
    "tdhook_rl": build_occlusion_tdhook_rl,
}


def run(config: RunConfig) -> BenchmarkResult:
    """Run both cases; ``config.quick`` only lowers the number of repeats."""
    warmup, repeats = (0, 3) if config.quick else (2, 10)
    net = actor_critic(OBS_SHAPE, N_LOGITS, HIDDEN, seed=config.seed, device=config.device)
    obs = observations(BATCH, OBS_SHAPE, seed=config.seed + 1, device=config.device)
    columns = list(range(N_LOGITS + 1))
    params = {"n_targets": len(columns), "obs_shape": list(OBS_SHAPE), "batch": BATCH}
    cases = [
        run_case(
            "exact Shapley, 512 coalitions",
            {**params, "coalitions": 2 ** OBS_SHAPE[0]},
            {name: partial(b, net, obs, columns) for name, b in SHAPLEY.items()},
            "loop",
            TOLERANCE,
            warmup,
            repeats,
            config.device,
            BUDGET_S,
        ),
        run_case(
            f"occlusion, window {WINDOW}, stride 1",
            {**params, "placements": N_PLACEMENTS},
            {name: partial(b, net, obs, columns) for name, b in OCCLUSION.items()},
            "loop",
            TOLERANCE,
            warmup,
            repeats,
            config.device,
            BUDGET_S,
        ),
    ]
    return BenchmarkResult(
        name=NAME,
        title="Perturbation attribution of 17 targets, actor-critic MLP",
        description=(
            "Exact Shapley values (all 512 coalitions of the 9 observation features) and"
            f" occlusion (window {WINDOW}, stride 1) of all 16 policy logits and the state"
            f" value, batch {BATCH} (one full job per timed call)."
        ),
        settings={
            "batch": BATCH,
            "obs_shape": OBS_SHAPE,
            "trunk": f"Linear({OBS_SHAPE[0]},{HIDDEN})-Tanh-Linear({HIDDEN},{HIDDEN})-Tanh",
            "heads": f"logits {N_LOGITS} + state_value 1",
            "targets": len(columns),
            "baseline": 0.0,
            "extra warmup": warmup,
            "repeats": repeats,
        },
        reference="loop",
        focus="tdhook_rl",
        tolerance=TOLERANCE,
        cases=cases,
        notes=list(NOTES),
    )


NOTES = (
    "`captum` (Shapley): not run; `captum.attr.ShapleyValues` evaluates n * n! orderings"
    " (3.3 million forwards per target for 9 features), `ShapleyValueSampling` is an"
    " estimate.",
    "`loop` (the reference): one forward of the batch per coalition (512) or placement (8)"
    " and per target, then the Shapley weights or the mean over covering placements: what"
    " evaluating perturbations one by one costs (captum's default `perturbations_per_eval=1`).",
    "`floor`: one forward over the 512 * 64 coalition inputs, one product with the weights.",
    "`tdhook_rl`: one `thr.Attributed(actor_critic, ExactShapley() | Occlusion(window=(2,),"
    " strides=1), inputs=['observation'], targets={...})` call.",
    "`captum` (occlusion): `Occlusion(forward).attribute(obs, sliding_window_shapes=(2,),"
    " strides=1, baselines=0.0, target=i)`, one call per target (`perturbations_per_eval=1`);"
    " `captum-batched`: the same with `perturbations_per_eval=8` (all placements per forward).",
)
