"""Command line: ``python -m benchmarks run [--quick] [--only NAME] [--device cpu|cuda]``."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import (
    atp,
    faithfulness,
    footprint,
    gpu_rollout,
    ig_memory,
    ig_sweep,
    in_rollout,
    layer_ig,
    lrp,
    multi_target_ig,
    perturbation,
    sae,
)
from benchmarks.harness import BenchmarkResult, RunConfig, environment
from benchmarks.report import from_json, render_markdown, write_reports

BENCHMARKS: dict[str, Callable[[RunConfig], BenchmarkResult]] = {
    multi_target_ig.NAME: multi_target_ig.run,
    layer_ig.NAME: layer_ig.run,
    lrp.NAME: lrp.run,
    ig_sweep.NAME: ig_sweep.run,
    in_rollout.NAME: in_rollout.run,
    gpu_rollout.NAME: gpu_rollout.run,
    ig_memory.NAME: ig_memory.run,
    footprint.NAME: footprint.run,
    atp.NAME: atp.run,
    perturbation.NAME: perturbation.run,
    faithfulness.NAME: faithfulness.run,
    sae.NAME: sae.run,
}
HERE = Path(__file__).resolve().parent
# blocks of any size come from the reusable heap, and the heap top is never trimmed
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the benchmarks and write RESULTS.md/results.json")
    run.add_argument("--quick", action="store_true", help="fewer repeats, reduced sweep")
    run.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable); one of {', '.join(BENCHMARKS)}",
    )
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice, one per core)",
    )
    run.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="benchmarks with many cases (gpu_rollout) start no new case after this long",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=HERE,
        help="where RESULTS.md and results.json go (default: benchmarks/)",
    )
    run.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default malloc settings (see _reexec_with_malloc_settings)",
    )
    commands.add_parser("list", help="list the benchmarks")
    render = commands.add_parser(
        "render", help="rewrite RESULTS.md from a saved results.json (same run, same numbers)"
    )
    render.add_argument("results", type=Path, help="a results.json written by `run`")
    render.add_argument(
        "--output", type=Path, default=None, help="default: RESULTS.md beside the JSON"
    )
    return parser


def _reexec_with_malloc_settings(argv: list[str]) -> None:
    """Restart this command with glibc told to keep freed memory (no return to the OS).

    By default glibc serves large blocks (above a threshold that grows to at most 32 MiB)
    with ``mmap`` and unmaps them when freed, and trims the heap top, so every job faults
    its temporaries' pages in again. In a virtual machine that
    page-fault traffic costs as much as the arithmetic and varies with the host's load;
    these two settings make every contestant reuse its memory, as a caching allocator does
    on a GPU. ``--system-malloc`` keeps the defaults.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if any(key in os.environ for key in MALLOC_ENV):
        return
    env = {**os.environ, **MALLOC_ENV}
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *argv], env)


def main(argv: list[str] | None = None, reexec: bool = False) -> int:
    """Parse ``argv`` and run; ``reexec`` (command line only) allows the malloc restart."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if reexec and args.command == "run" and not args.system_malloc:
        _reexec_with_malloc_settings(argv)
    if args.command == "render":
        results, env, command = from_json(args.results.read_text(encoding="utf-8"))
        markdown = args.output or args.results.with_name("RESULTS.md")
        markdown.write_text(render_markdown(results, env, command), encoding="utf-8")
        print(f"[benchmarks] wrote {markdown}")
        return 0
    if args.command == "list":
        for name, function in BENCHMARKS.items():
            doc = (function.__module__ and sys.modules[function.__module__].__doc__) or ""
            print(f"{name}: {doc.strip().splitlines()[0]}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    try:  # before any timing, not after minutes of it
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"--output-dir {args.output_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = RunConfig(
        device=torch.device(args.device), quick=args.quick, time_budget_s=args.time_budget
    )
    results = []
    for name in args.only or list(BENCHMARKS):
        start = time.perf_counter()
        print(f"[benchmarks] {name} ...", flush=True)
        results.append(BENCHMARKS[name](config))
        print(f"[benchmarks] {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    env = environment(config.device, HERE.parent)
    markdown, raw = write_reports(results, env, command, args.output_dir)
    print(f"[benchmarks] wrote {markdown} and {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(reexec=True))
