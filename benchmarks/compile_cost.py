"""Cost of ``Attributed`` under ``torch.compile``: compile time, graphs, per-call time.

Run on its own (each case compiles from scratch, minutes in all on 2 CPU cores)::

    python -m benchmarks.compile_cost                  # all cases, a Markdown table
    python -m benchmarks.compile_cost --json out.json  # also the raw numbers
    python -m benchmarks.compile_cost --only policy/plain --only policy/attributed

Two jobs, each case in a fresh interpreter with an empty inductor cache (a cache hit from
an earlier case would hide the compile time):

* ``policy/*``: ``torch.compile`` of the collection policy (what a collector's
  ``compile_policy`` does), an actor-critic MLP (9 -> 64 -> 64, TanhNormal policy and value
  head), called under ``no_grad`` on 64 observations. ``plain`` is the module;
  ``attributed`` wraps it in ``Attributed`` (IG-16, both heads), whose attribution pass runs
  eagerly under compile (``torch.compiler.disable``) so only the module's forward is
  compiled; ``attributed-traced`` lets dynamo trace the pass as well (tdhook_rl before that
  change): it graph-breaks at ``autograd.grad`` and compiles each piece, some twice (the
  second call recompiles). Traced, only ``strategy="replicate"`` compiles (the default
  strategies fail inside the compiled backward), so that case uses it.
* ``update/*``: ``torch.compile`` of a PPO update (``ClipPPOLoss`` on 256 samples, then
  ``backward``) whose critic is ``plain``, ``attributed`` (the loss calls the wrapped critic:
  one eager attribution pass per update), ``attributed-disabled`` (the same inside
  ``critic.disabled()``: a graph break at the wrapper, where the thread-local switch is read)
  or ``attributed-enabled-false`` (``critic.enabled = False``: traced like the plain critic).

Columns: ``first s`` (the first call: tracing and compiling), ``next s`` (calls 2 and 3,
where recompilations land), ``steady ms`` (median of 20 later calls), ``eager ms`` (median
of 20 calls of the uncompiled callable), ``graphs`` (dynamo's unique graphs) and ``breaks``
(graph breaks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

CASES = (
    "policy/plain",
    "policy/attributed",
    "policy/attributed-traced",
    "update/plain",
    "update/attributed",
    "update/attributed-disabled",
    "update/attributed-enabled-false",
)
OBS, BATCH, UPDATE_BATCH, STEADY = 9, 64, 256, 20


def _modules(seed: int = 0) -> tuple[Any, Any]:
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

    def mlp(n_out: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(OBS, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
            torch.nn.Linear(64, n_out),
        )  # fmt: skip

    torch.manual_seed(seed)
    actor = ProbabilisticActor(
        TensorDictModule(
            torch.nn.Sequential(mlp(2), NormalParamExtractor()), ["observation"], ["loc", "scale"]
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    return actor, ValueOperator(mlp(1), in_keys=["observation"])


def _traced_class() -> type:
    """``Attributed`` with its attribution pass visible to dynamo (the undecorated methods)."""
    from tdhook_rl.attributed import Attributed

    class TracedAttributed(Attributed):
        _prepare = Attributed._prepare.__wrapped__  # type: ignore[attr-defined]
        _attribute = Attributed._attribute.__wrapped__  # type: ignore[attr-defined]

    return TracedAttributed


def _policy_case(variant: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictSequential

    from tdhook_rl.attributed import Attributed
    from tdhook_rl.attribution import IntegratedGradients
    from tdhook_rl.targets import ActionLogProb

    actor, critic = _modules()
    policy: Any = TensorDictSequential(actor, critic)
    if variant != "plain":
        traced = variant == "attributed-traced"
        policy = (_traced_class() if traced else Attributed)(
            policy,
            IntegratedGradients(n_steps=16),
            inputs=["observation"],
            targets={"policy": ActionLogProb(), "value": "state_value"},
            # traced, the default strategies fail: "Cannot access data pointer of Tensor
            # that doesn't have storage" (a compiled backward under autograd.grad's vmap)
            strategy="replicate" if traced else "auto",
        )

    def make_input() -> Any:
        return TensorDict(observation=torch.randn(BATCH, OBS), batch_size=[BATCH])

    def call(fn: Callable[[Any], Any]) -> Any:
        with torch.no_grad():
            return fn(make_input())

    return lambda: policy, call


def _update_case(variant: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    import contextlib

    import torch
    from tensordict import TensorDict
    from torchrl.objectives import ClipPPOLoss

    from tdhook_rl.attributed import Attributed

    actor, critic = _modules()
    if variant != "plain":
        critic = Attributed(critic, "ig", inputs=["observation"], targets={"value": "state_value"})
        critic.enabled = variant != "attributed-enabled-false"
    loss_module = ClipPPOLoss(actor, critic)
    with torch.no_grad():
        batch = actor(TensorDict(observation=torch.randn(UPDATE_BATCH, OBS), batch_size=[256]))
    batch["advantage"] = torch.randn(UPDATE_BATCH, 1)
    batch["value_target"] = torch.randn(UPDATE_BATCH, 1)

    def update(data: Any) -> Any:
        losses = loss_module(data)
        loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
        loss.backward()
        return loss.detach()

    def call(fn: Callable[[Any], Any]) -> Any:
        context = (
            critic.disabled() if variant == "attributed-disabled" else contextlib.nullcontext()
        )
        with context:
            return fn(batch.clone())

    return lambda: update, call


def measure(case: str) -> dict[str, Any]:
    """Runs one case in this process (call it in a fresh one: see :func:`run_isolated`)."""
    import torch
    from torch._dynamo.utils import counters

    torch.set_num_threads(1)
    job, variant = case.split("/")
    build, call = (_policy_case if job == "policy" else _update_case)(variant)
    fn = build()
    eager = []
    for i in range(STEADY + 3):
        start = time.perf_counter()
        call(fn)
        if i >= 3:
            eager.append(time.perf_counter() - start)
    compiled = torch.compile(fn)
    start = time.perf_counter()
    call(compiled)
    first = time.perf_counter() - start
    start = time.perf_counter()
    call(compiled)
    call(compiled)
    following = time.perf_counter() - start
    steady = []
    for _ in range(STEADY):
        start = time.perf_counter()
        call(compiled)
        steady.append(time.perf_counter() - start)
    return {
        "case": case,
        "first s": first,
        "next s": following,
        "steady ms": 1e3 * statistics.median(steady),
        "eager ms": 1e3 * statistics.median(eager),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "breaks": int(sum(counters["graph_break"].values())),
    }


def run_isolated(case: str) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter with an empty inductor cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_FX_GRAPH_CACHE": "0"}
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.compile_cost", "--case", case],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if out.returncode != 0:
        return {"case": case, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    columns = ["first s", "next s", "steady ms", "eager ms", "graphs", "breaks"]
    lines = ["| case | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['case']} | failed: {row['error']} |")
            continue
        cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_cost", description=__doc__)
    parser.add_argument("--only", action="append", choices=CASES, help="run only this case")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(measure(args.case)))
        return 0
    rows = []
    for case in args.only or CASES:
        rows.append(run_isolated(case))
        print(f"{case}: done", file=sys.stderr, flush=True)
    import torch

    print(f"torch {torch.__version__}, 1 intra-op thread, cases in fresh processes\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
