"""Layer-wise relevance propagation: 17 targets (16 policy logits and the state value) of the
9 -> 256 -> 256 actor-critic, EpsilonPlus (epsilon on the dense layers, Tanh passed
through), batch 64, relevance at the observation.

Contestants: ``zennit`` 0.5.1, its ``Gradient`` attributor under ``EpsilonPlus``, one
backward per target (top relevance one-hot times the output, zennit's convention);
``tdhook`` 0.3, its ``LRP`` with the epsilon rule on the dense layers and the pass rule on
Tanh, one call for every target (the batch repeated once per target, each row selecting its
target, tdhook's own multi-target idiom; the initial relevance set to the target's value);
``tdhook_rl``, one ``Attributed(..., LRP(EpsilonPlus()))`` call: one forward and one backward
batched over every target. zennit imports torchvision at import time; it is imported here
with stub torchvision modules that are removed again right after.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict

from benchmarks.harness import (
    BenchmarkResult,
    ContestantUnavailable,
    RunConfig,
    Tolerance,
    run_case,
)
from benchmarks.models import actor_critic, observations

NAME = "lrp"
BATCH = 64
N_LOGITS = 16
HIDDEN = 256
TOLERANCE = Tolerance(atol_scaled=1e-4, rtol=1e-3)
_STUBS = ("torchvision", "torchvision.models", "torchvision.models.resnet")


def import_zennit() -> Any:
    """zennit, imported with stub torchvision modules present only during the import."""
    if "zennit" in sys.modules:
        return sys.modules["zennit"]
    added = [name for name in _STUBS if name not in sys.modules]
    if added == list(_STUBS):
        vision, models, resnet = (types.ModuleType(name) for name in _STUBS)
        resnet.Bottleneck = type("Bottleneck", (), {})  # type: ignore[attr-defined]
        resnet.BasicBlock = type("BasicBlock", (), {})  # type: ignore[attr-defined]
        vision.models, models.resnet = models, resnet  # type: ignore[attr-defined]
        sys.modules.update(zip(_STUBS, (vision, models, resnet), strict=True))
    else:
        added = []
    try:
        import zennit
        import zennit.attribution
        import zennit.composites
    except ImportError as exc:
        raise ContestantUnavailable(f"zennit: {exc}") from exc
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return zennit


def run(config: RunConfig) -> BenchmarkResult:
    import tdhook_rl as thr
    from tdhook_rl.attribution.lrp import LRP, EpsilonPlus
    from tdhook_rl.targets import Index

    warmup, repeats = (0, 3) if config.quick else (2, 10)
    net = actor_critic((9,), N_LOGITS, HIDDEN, seed=config.seed, device=config.device)
    x = observations(BATCH, (9,), seed=config.seed + 1, device=config.device)
    targets: dict[str, object] = {f"logit_{i}": Index("logits", i) for i in range(N_LOGITS)}
    targets["value"] = "state_value"

    def build_tdhook_rl() -> Callable[[], torch.Tensor]:
        explained = thr.Attributed(
            net.td_module, LRP(EpsilonPlus()), inputs=["observation"], targets=targets
        )

        def call() -> torch.Tensor:  # (n_targets, batch, 9)
            out = explained(TensorDict(observation=x, batch_size=[BATCH]))
            return torch.stack([out["attribution", name, "observation"] for name in targets])

        return call

    def build_zennit() -> Callable[[], torch.Tensor]:
        zennit = import_zennit()
        model = torch.nn.Module()  # the stacked view as a module zennit can hook
        model.trunk, model.policy, model.value = net.trunk, net.policy, net.value
        model.forward = net.stacked  # type: ignore[method-assign]
        composite = zennit.composites.EpsilonPlus()
        eye = torch.eye(N_LOGITS + 1, device=x.device)

        def call() -> torch.Tensor:
            with zennit.attribution.Gradient(model, composite) as attributor:
                return torch.stack(
                    [
                        attributor(x, attr_output=lambda out, t=t: out * eye[t])[1]
                        for t in range(N_LOGITS + 1)
                    ]
                )

        return call

    def build_tdhook() -> Callable[[], torch.Tensor]:
        try:
            from tdhook.attribution import LRP as TdhookLRP
            from tdhook.attribution.lrp_helpers.rules import EpsilonRule, PassRule
        except ImportError as exc:
            raise ContestantUnavailable(f"tdhook: {exc}") from exc

        def rule(name: str, module: torch.nn.Module) -> Any:
            if isinstance(module, torch.nn.Linear):
                return EpsilonRule(1e-6)
            return PassRule() if isinstance(module, torch.nn.Tanh) else None

        def select(outputs: TensorDict, extra: TensorDict) -> TensorDict:
            stacked = torch.cat([outputs["logits"], outputs["state_value"]], dim=-1)
            score = stacked.gather(-1, extra["target_index"][..., None]).squeeze(-1)
            return TensorDict(score=score, batch_size=outputs.batch_size)

        method = TdhookLRP(
            init_attr_targets=select,
            init_attr_grads=lambda scores, extra: scores.detach(),  # top relevance: the value
            additional_init_keys=["target_index"],
            rule_mapper=rule,
            skip_modules=TdhookLRP.default_skip,
        )
        context = method.prepare(net.td_module)
        n = N_LOGITS + 1
        expanded = x.expand(n, *x.shape)  # (B, 9) -> (T, B, 9): row (t, b) explains target t
        index = torch.arange(n, device=x.device)[:, None].expand(expanded.shape[:2])

        def call() -> torch.Tensor:
            data = TensorDict(
                {"observation": expanded, "target_index": index},
                batch_size=expanded.shape[:2],
                device=x.device,
            )
            with context as hooked:
                return hooked(data)["attr", "observation"]

        return call

    case = run_case(
        f"{N_LOGITS + 1} targets, EpsilonPlus",
        {"batch": BATCH, "hidden": HIDDEN},
        {"zennit": build_zennit, "tdhook": build_tdhook, "tdhook_rl": build_tdhook_rl},
        "zennit",
        TOLERANCE,
        warmup,
        repeats,
        config.device,
    )
    return BenchmarkResult(
        name=NAME,
        title="LRP (EpsilonPlus), 17 targets",
        description=(
            "`zennit`: Gradient attributor under EpsilonPlus, one backward per target; "
            "`tdhook`: LRP (epsilon, pass on Tanh), one call, the batch repeated per target; "
            "`tdhook_rl`: one Attributed call with LRP(EpsilonPlus()), every target from one "
            "forward and one batched backward."
        ),
        settings={"batch": BATCH, "hidden": HIDDEN, "composite": "EpsilonPlus"},
        reference="zennit",
        tolerance=TOLERANCE,
        cases=[case],
        focus="tdhook_rl",
    )
