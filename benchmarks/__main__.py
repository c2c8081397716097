"""Command line: ``python -m benchmarks run [--quick] [--only NAME] [--device cpu|cuda]``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import ig_sweep, multi_target_ig
from benchmarks.harness import BenchmarkResult, RunConfig, environment, write_reports

BENCHMARKS: dict[str, Callable[[RunConfig], BenchmarkResult]] = {
    multi_target_ig.NAME: multi_target_ig.run,
    ig_sweep.NAME: ig_sweep.run,
}
HERE = Path(__file__).resolve().parent


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
        "--output-dir",
        type=Path,
        default=HERE,
        help="where RESULTS.md and results.json go (default: benchmarks/)",
    )
    commands.add_parser("list", help="list the benchmarks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name, function in BENCHMARKS.items():
            doc = (function.__module__ and sys.modules[function.__module__].__doc__) or ""
            print(f"{name}: {doc.strip().splitlines()[0]}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    config = RunConfig(device=torch.device(args.device), quick=args.quick)
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
    raise SystemExit(main())
