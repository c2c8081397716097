"""Multi-target integrated gradients on an actor-critic MLP.

17 targets (16 policy logits and the state value) of a 9-input actor-critic with a shared
256-256 Tanh trunk, batch 64 (and 1024 on a GPU), 50 Gauss-Legendre steps, zero baseline.
Every contestant does the whole job (all targets, whole batch) per timed call.
"""

from __future__ import annotations

from benchmarks.harness import BenchmarkResult, RunConfig
from benchmarks.ig_contestants import TOLERANCE, run_ig_case
from benchmarks.models import actor_critic, observations

NAME = "multi_target_ig"
CONTESTANTS = ("captum", "tdhook", "tdhook-loop", "floor", "floor-jvp", "tdhook_rl")
# on a GPU also: reverse mode (the cheaper floor there) and a captured CUDA graph
GPU_CONTESTANTS = (*CONTESTANTS, "tdhook_rl-reverse", "tdhook_rl-cudagraph")
BATCH = 64
GPU_BATCHES = (64, 1024)
BUDGET_S = 10.0  # per contestant and case: slow peers are timed fewer times
OBS_SHAPE = (9,)
N_LOGITS = 16
HIDDEN = 256
N_STEPS = 50
RULE = "gausslegendre"


def run(config: RunConfig) -> BenchmarkResult:
    """Run the benchmark; ``config.quick`` only lowers the number of repeats.

    On a GPU it runs batch 64 and batch 1024 (captum's per-call cost, which the GPU does not
    remove, grows there; each contestant gets at most ``BUDGET_S`` seconds of timed calls).
    """
    warmup, repeats = (0, 5) if config.quick else (2, 15)
    net = actor_critic(OBS_SHAPE, N_LOGITS, HIDDEN, seed=config.seed, device=config.device)
    columns = list(range(N_LOGITS + 1))
    on_gpu = config.device.type == "cuda"
    batches = GPU_BATCHES if on_gpu else (BATCH,)
    contestants = GPU_CONTESTANTS if on_gpu else CONTESTANTS
    cases = []
    for batch in batches:
        obs = observations(batch, OBS_SHAPE, seed=config.seed + 1, device=config.device)
        label = "17 targets" if len(batches) == 1 else f"17 targets, batch {batch}"
        cases.append(
            run_ig_case(
                label, net, obs, columns, contestants, N_STEPS, RULE, warmup, repeats, BUDGET_S
            )
        )
    return BenchmarkResult(
        name=NAME,
        title="Multi-target integrated gradients, actor-critic MLP",
        description=(
            "Attributions of all 16 policy logits and the state value to the 9 observation"
            f" features of a batch of {' and '.join(map(str, batches))}"
            " (one full job per timed call)."
        ),
        settings={
            "batch": batches if len(batches) > 1 else BATCH,
            "obs_shape": OBS_SHAPE,
            "trunk": f"Linear({OBS_SHAPE[0]},{HIDDEN})-Tanh-Linear({HIDDEN},{HIDDEN})-Tanh",
            "heads": f"logits {N_LOGITS} + state_value 1",
            "targets": len(columns),
            "n_steps": N_STEPS,
            "rule": RULE,
            "baseline": 0.0,
            "extra warmup": warmup,
            "repeats": repeats,
        },
        reference="captum",
        focus="tdhook_rl",
        tolerance=TOLERANCE,
        cases=cases,
        notes=list(CONTESTANT_NOTES),
    )


CONTESTANT_NOTES = (
    "`captum`: `IntegratedGradients(forward).attribute(obs, baselines=0.0, target=i,"
    " n_steps=50, method='gausslegendre')`, one call per target (captum's ordinary usage;"
    " `internal_batch_size` unset); `forward` returns cat(logits, state_value), [N, 17].",
    "`tdhook`: tdhook 0.3 `IntegratedGradients(init_attr_targets=..., additional_init_keys="
    "['target_index'], multiply_by_inputs=True)`, one call for all targets: tdhook"
    " differentiates the *sum* of the selected outputs, so the batch is repeated per target"
    " ((B,) -> (T, B)) and each row selects its own target through a per-row label, the"
    " mechanism of its `init_attr_targets_with_labels`. Context prepared once, entered per call.",
    "`tdhook-loop`: the same tdhook context, entered once per job, called once per target.",
    "`floor`: one forward pass over the 50*64 path points and one `torch.autograd.grad("
    "..., is_grads_batched=True)` over the one-hot cotangents, then the quadrature weights.",
    "`floor-jvp`: forward mode instead, `vmap(jvp)` over the 9 input directions: one"
    " forward pass carrying 9 tangents gives the whole Jacobian, cheaper than 17 reverse"
    " passes because the observation is smaller than the number of targets.",
    "`tdhook_rl`: one `thr.Attributed(actor_critic, IntegratedGradients(n_steps=50,"
    " rule='gausslegendre', baseline=0.0), inputs=['observation'], targets={...})` call"
    " with 16 `Index('logits', i)` targets and `'state_value'` (strategy `auto`: forward"
    " mode here, 9 features < 17 targets).",
    "GPU only: `tdhook_rl-reverse` (`strategy='reverse'`) and `tdhook_rl-cudagraph` (the"
    " `auto` module wrapped in `tensordict.nn.CudaGraphModule`, replayed per call).",
)
