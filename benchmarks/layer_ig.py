"""Integrated gradients at a hidden site: 17 targets (16 policy logits and the state value) of
the 9 -> 256 -> 256 actor-critic, attributed to the trunk's second Tanh layer (256 units),
batch 64, 50 Gauss-Legendre steps, zero input baseline (the path runs from that layer's
activation at the zero observation to its actual activation).

Contestants: ``captum``, ``LayerIntegratedGradients`` called once per target;
``tdhook_rl``, one ``Attributed(..., inputs=[site])`` call for every target (reverse mode:
the site has more units than there are targets).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict

from benchmarks.harness import BenchmarkResult, RunConfig, Tolerance, run_case
from benchmarks.models import actor_critic, observations

NAME = "layer_ig"
BATCH = 64
N_LOGITS = 16
HIDDEN = 256
N_STEPS = 50
SITE = "module.0.module.3"  # the trunk's second Tanh, in the TensorDict module
TOLERANCE = Tolerance(atol_scaled=1e-4, rtol=1e-3)


def run(config: RunConfig) -> BenchmarkResult:
    import tdhook_rl as thr
    from tdhook_rl.attribution import IntegratedGradients
    from tdhook_rl.targets import Index

    warmup, repeats = (0, 3) if config.quick else (2, 10)
    net = actor_critic((9,), N_LOGITS, HIDDEN, seed=config.seed, device=config.device)
    x = observations(BATCH, (9,), seed=config.seed + 1, device=config.device)
    layer = net.td_module.get_submodule(SITE)
    targets: dict[str, object] = {f"logit_{i}": Index("logits", i) for i in range(N_LOGITS)}
    targets["value"] = "state_value"

    def build_tdhook_rl() -> Callable[[], torch.Tensor]:
        explained = thr.Attributed(
            net.td_module, IntegratedGradients(n_steps=N_STEPS), inputs=[SITE], targets=targets
        )

        def call() -> torch.Tensor:  # (n_targets, batch, units)
            out = explained(TensorDict(observation=x, batch_size=[BATCH]))
            return torch.stack([out["attribution", name, SITE] for name in targets])

        return call

    def build_captum() -> Callable[[], torch.Tensor]:
        from captum.attr import LayerIntegratedGradients

        explainer = LayerIntegratedGradients(net.stacked, layer)

        def call() -> torch.Tensor:
            return torch.stack(
                [
                    explainer.attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=N_STEPS)
                    for t in range(N_LOGITS + 1)
                ]
            )

        return call

    case = run_case(
        f"{N_LOGITS + 1} targets, {HIDDEN} units",
        {"batch": BATCH, "n_steps": N_STEPS},
        {"captum": build_captum, "tdhook_rl": build_tdhook_rl},
        "captum",
        TOLERANCE,
        warmup,
        repeats,
        config.device,
    )
    return BenchmarkResult(
        name=NAME,
        title="Integrated gradients at a hidden layer, 17 targets",
        description=(
            "`captum`: LayerIntegratedGradients, one call per target; `tdhook_rl`: one "
            "Attributed call with the hidden site as input, every target in one batched pass."
        ),
        settings={"batch": BATCH, "n_steps": N_STEPS, "site": "trunk's second Tanh (256)"},
        reference="captum",
        tolerance=TOLERANCE,
        cases=[case],
        focus="tdhook_rl",
    )
