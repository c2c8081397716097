"""The ``tdhook-rl`` command.

``tdhook-rl explain`` rolls out a trained agent, attributes its policy and value heads
separately, probes its hidden layers for the physical state, runs an ablation sweep, and
writes a report folder (``report.html``, the PNGs, ``summary.json``). ``tdhook-rl agents``
lists the shipped agents.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

EXPLAINERS = ("double_pendulum",)


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdhook-rl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explain = commands.add_parser(
        "explain",
        help="explain a trained agent and write a report folder",
        description="Roll out an agent, attribute its policy and value heads, probe its hidden "
        "layers, ablate unit groups, and write report.html + PNGs + summary.json.",
    )
    explain.add_argument(
        "--agent",
        default="double_pendulum",
        help="a shipped agent (see `tdhook-rl agents`); default: double_pendulum",
    )
    explain.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint written by the agent's training script (default: the shipped one)",
    )
    explain.add_argument(
        "--method",
        default="ig",
        help="attribution method: ig, saliency, input_x_gradient, smoothgrad",
    )
    explain.add_argument("--n-steps", type=int, default=32, help="integration steps of IG")
    explain.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="environment steps per copy in the attribution rollout",
    )
    explain.add_argument("--envs", type=int, default=4, help="environment copies")
    explain.add_argument("--episodes", type=int, default=4, help="paired episodes per ablation")
    explain.add_argument("--groups", type=int, default=4, help="unit groups per hidden layer")
    explain.add_argument(
        "--ablation-steps", type=int, default=300, help="step cap of each ablation episode"
    )
    explain.add_argument("--no-probes", action="store_true", help="skip the probes")
    explain.add_argument("--no-ablation", action="store_true", help="skip the ablation sweep")
    explain.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    explain.add_argument("--seed", type=int, default=0)
    explain.add_argument(
        "--out",
        type=Path,
        default=Path("tdhook-rl-report"),
        help="report folder (default: ./tdhook-rl-report)",
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bars")
    commands.add_parser(
        "agents",
        help="list the shipped agents",
        description="List the agents shipped with tdhook_rl.",
    )
    return parser


def _load_agent(name: str, checkpoint: Path | None, device: str):
    from tdhook_rl import agents

    available = agents.available()
    if name not in available:
        raise UsageError(f"unknown agent {name!r}; shipped agents: {', '.join(available)}")
    if name not in EXPLAINERS:
        raise UsageError(
            f"`tdhook-rl explain` does not cover the {name!r} agent yet; it explains: "
            f"{', '.join(EXPLAINERS)}"
        )
    if checkpoint is not None and not checkpoint.exists():
        raise UsageError(f"checkpoint {checkpoint} does not exist")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
    model = importlib.import_module(f"tdhook_rl.agents.{name}.model")
    try:
        return model.load(device=device, checkpoint=checkpoint)
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"checkpoint {checkpoint} does not match the {name} network: {first}"
        ) from err


def _explain(args: argparse.Namespace) -> int:
    from tdhook_rl.attribution import METHODS
    from tdhook_rl.report.double_pendulum import ExplainOptions, explain_double_pendulum

    if args.method not in METHODS:
        raise UsageError(f"unknown method {args.method!r}; choose one of {', '.join(METHODS)}")
    for flag in ("n_steps", "steps", "envs", "episodes", "groups", "ablation_steps"):
        minimum = 2 if flag in ("n_steps", "episodes") else 1
        if getattr(args, flag) < minimum:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= {minimum}")
    agent = _load_agent(args.agent, args.checkpoint, args.device)
    opts = ExplainOptions(
        method=args.method,
        n_steps=args.n_steps,
        steps=args.steps,
        envs=args.envs,
        episodes=args.episodes,
        groups=args.groups,
        ablation_steps=args.ablation_steps,
        seed=args.seed,
        device=args.device,
        probes=not args.no_probes,
        ablation=not args.no_ablation,
    )
    path, summary = explain_double_pendulum(agent, args.out, opts, progress=not args.quiet)
    shares = summary["attribution_share"]
    top = {h: max(s, key=s.get) for h, s in shares.items()}
    line = (
        f"report: {path / 'report.html'} | {summary['transitions']} transitions | "
        f"policy attends most to {top['policy']}, value to {top['value']}"
    )
    if "probes" in summary:
        best = max(summary["probes"], key=lambda r: r["r2"])
        line += f" | best probe {best['label']} from {best['site']} (R^2 {best['r2']:.2f})"
    if "ablations" in summary:
        worst = min(summary["ablations"], key=lambda r: r["change"])
        line += f" | largest return drop {worst['change']:+.0f} ({worst['name']})"
    print(line + f" | {summary['wall_seconds']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tdhook-rl`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "agents":
            from tdhook_rl import agents

            print("\n".join(agents.available()))
            return 0
        return _explain(args)
    except UsageError as err:
        print(f"tdhook-rl: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"tdhook-rl: error: missing optional dependency: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
