"""Peak memory of integrated gradients with ``chunk_size`` set and unset.

The multi-target job of ``multi_target_ig`` (17 targets, 9 features, 2x256 trunk) with
``n_steps`` 50 and 200, all path points in one pass (``chunk_size=None``) or 10 at a time.
On a GPU the peak is ``torch.cuda.max_memory_allocated`` above what was allocated before the
call; on the CPU each measurement runs in a fresh process and reports its peak resident set
size above the size just before the call (``VmHWM``; torch's CPU allocations are not
visible to ``tracemalloc``).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch

from benchmarks.harness import BenchmarkResult, RunConfig, Tolerance, run_case
from benchmarks.ig_contestants import build_tdhook_rl
from benchmarks.models import actor_critic, observations

NAME = "ig_memory"
N_STEPS = (50, 200)
CHUNK = 10
GPU_BATCH = 1024
CPU_BATCH = 64
N_LOGITS = 16
HIDDEN = 256
TOLERANCE = Tolerance(atol_scaled=1e-5, rtol=1e-4)


def _job(batch: int, n_steps: int, chunk: int | None, device: torch.device, seed: int = 0):
    """The attribution call (``multi_target_ig``'s tdhook_rl contestant with ``chunk_size``)
    as a zero-argument function returning [targets, batch, 9]."""
    net = actor_critic((9,), N_LOGITS, HIDDEN, seed=seed, device=device)
    obs = observations(batch, (9,), seed=seed + 1, device=device)
    columns = list(range(N_LOGITS + 1))
    return build_tdhook_rl(net, obs, columns, n_steps, "gausslegendre", chunk_size=chunk)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would carry over the parent's peak,
    which survives ``fork`` + ``exec``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_cpu(batch: int, n_steps: int, chunk: int | None) -> int:
    """Peak RSS growth (bytes) of one call in this process (run in a fresh one)."""
    torch.set_num_threads(1)
    _job(2, 2, chunk, torch.device("cpu"))()  # lazy library set-up out of the measurement
    call = _job(batch, n_steps, chunk, torch.device("cpu"))
    before = _rss_bytes()
    call()
    return _peak_rss_bytes() - before


def _peak_bytes(batch: int, n_steps: int, chunk: int | None, device: torch.device) -> int:
    if device.type == "cuda":
        call = _job(batch, n_steps, chunk, device)
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    args = json.dumps([batch, n_steps, chunk])
    code = (
        "import json; from benchmarks.ig_memory import measure_cpu as m;"
        f" print(m(*json.loads({args!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def run(config: RunConfig) -> BenchmarkResult:
    """Two cases (n_steps 50, 200; ``config.quick``: 50 only), two contestants each (chunk
    unset, chunk 10)."""
    device = config.device
    batch = GPU_BATCH if device.type == "cuda" else CPU_BATCH
    warmup, repeats = (0, 3) if config.quick else (1, 5)
    cases = []
    for n_steps in N_STEPS[:1] if config.quick else N_STEPS:
        names = {"chunk unset": None, f"chunk {CHUNK}": CHUNK}
        builders = {
            name: (lambda chunk=chunk, n=n_steps: _job(batch, n, chunk, device, config.seed))
            for name, chunk in names.items()
        }
        case = run_case(
            f"n_steps={n_steps}",
            {"n_steps": n_steps, "batch": batch},
            builders,
            "chunk unset",
            TOLERANCE,
            warmup,
            repeats,
            device,
        )
        for contestant in case.contestants:
            peak = _peak_bytes(batch, n_steps, names[contestant.name], device)
            contestant.extras["peak MiB"] = peak / 2**20
        cases.append(case)
    where = "GPU memory" if device.type == "cuda" else "resident set size (fresh process)"
    return BenchmarkResult(
        name=NAME,
        title="Integrated gradients: peak memory with chunk_size set and unset",
        description=(
            f"17 targets (16 logits + value), batch {batch}, 9 features, 2x256 trunk;"
            f" `peak MiB`: peak {where} of one call above the memory in use before it."
        ),
        settings={"batch": batch, "n_steps": N_STEPS, "chunk_size": CHUNK},
        reference="chunk unset",
        focus=None,
        tolerance=TOLERANCE,
        cases=cases,
        notes=[
            "`chunk unset`: all n_steps path points in one forward and one batched backward;"
            f" `chunk {CHUNK}`: `IntegratedGradients(..., chunk_size={CHUNK})`, at most"
            f" {CHUNK} points per pass, the same attributions (agreement column).",
        ],
    )
