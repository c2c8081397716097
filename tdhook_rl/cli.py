"""The ``tdhook-rl`` command.

``tdhook-rl explain --agent NAME`` explains a trained agent and writes a report folder
(``report.html`` with the figures embedded, the PNGs, ``summary.json`` with every number
shown):

* ``double_pendulum`` (default): rolls the agent out, attributes its policy and value heads,
  probes its hidden layers for the physical state and runs an ablation sweep;
* ``chess``: attributes the chosen move and the win probability to the squares of a few
  positions (held-out ones, or ``--fen``);
* ``connect_four``: plays a few games against a scripted player and attributes every move
  and evaluation of the agent to the cells of the grid.

Options that belong to another agent are refused (one line, exit status 2) rather than
silently ignored. ``tdhook-rl agents`` lists the shipped agents.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EXPLAINERS", "Explainer", "UsageError", "main"]


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


@dataclass(frozen=True)
class Explainer:
    """How ``tdhook-rl explain`` explains one agent; the job lives in ``module`` and is
    imported only when it runs.

    Attributes:
        module: the report module, holding ``options``, ``run`` and ``summary_line``.
        options: the name of its options dataclass.
        run: the name of its job, ``run(agent, out_dir, options, progress=...) ->
            (report folder, summary)``.
        specific: the agent-specific options it reads (argparse ``dest``) and their
            defaults; the common ones (``method``, ``n_steps``, ``seed``, ``device``,
            ``logger``) go to every agent.

    Examples:
        >>> sorted(EXPLAINERS)
        ['chess', 'connect_four', 'double_pendulum']
        >>> EXPLAINERS["chess"].make_options({"positions": 2}).positions
        2
    """

    module: str
    options: str
    run: str
    specific: Mapping[str, Any]

    def __call__(
        self, agent: Any, out_dir: Path, values: Mapping[str, Any], progress: bool
    ) -> tuple[Path, dict[str, Any], str]:
        """Builds the options from ``values`` and runs the job: ``(folder, summary, line)``."""
        module = importlib.import_module(self.module)
        path, summary = getattr(module, self.run)(
            agent, out_dir, self.make_options(values), progress=progress
        )
        return path, summary, module.summary_line(path, summary)

    def make_options(self, values: Mapping[str, Any]) -> Any:
        """The job's options dataclass (raises ``ValueError`` on a bad value)."""
        return getattr(importlib.import_module(self.module), self.options)(**values)


EXPLAINERS: dict[str, Explainer] = {
    "double_pendulum": Explainer(
        "tdhook_rl.report.double_pendulum",
        "ExplainOptions",
        "explain_double_pendulum",
        {
            "steps": 1000,
            "envs": 4,
            "episodes": 4,
            "groups": 4,
            "ablation_steps": 300,
            "probes": True,
            "ablation": True,
        },
    ),
    "chess": Explainer(
        "tdhook_rl.report.chess", "ChessOptions", "explain_chess", {"positions": None, "fen": ()}
    ),
    "connect_four": Explainer(
        "tdhook_rl.report.connect_four",
        "ConnectFourOptions",
        "explain_connect_four",
        {"games": 2, "opponent": "random", "positions": 8},
    ),
}
# minimum values of integer options, checked when given
MINIMUM = {
    "n_steps": 2,
    "steps": 1,
    "envs": 1,
    "episodes": 2,
    "groups": 1,
    "ablation_steps": 1,
    "games": 1,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdhook-rl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explain = commands.add_parser(
        "explain",
        help="explain a trained agent and write a report folder",
        description="Explain a trained agent and write report.html + PNGs + summary.json. "
        "Agent-specific options are refused for the other agents (exit status 2).",
    )
    common = explain.add_argument_group("options of every agent")
    common.add_argument(
        "--agent",
        default="double_pendulum",
        help=f"one of {', '.join(EXPLAINERS)} (see `tdhook-rl agents`); default: double_pendulum",
    )
    common.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint written by the agent's training script (default: the shipped one)",
    )
    common.add_argument(
        "--network",
        metavar="MODULE:CALLABLE",
        default=None,
        help="with --checkpoint: build the network by calling this (no arguments) instead of "
        "the shipped architecture, then load the checkpoint into it; double_pendulum: an "
        "ActorValueOperator (checkpoint entry 'actor_critic') or a pair (actor, critic); "
        "chess, connect_four: a module with the shipped agent's entries",
    )
    common.add_argument(
        "--method",
        default="ig",
        help="attribution method: ig (default), saliency, input_x_gradient, smoothgrad",
    )
    common.add_argument(
        "--n-steps", type=int, default=32, help="integration steps of IG (default 32)"
    )
    common.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    common.add_argument("--seed", type=int, default=0)
    common.add_argument(
        "--out",
        type=Path,
        default=Path("tdhook-rl-report"),
        help="report folder (default: ./tdhook-rl-report)",
    )
    common.add_argument(
        "--logger",
        choices=("none", "csv", "tensorboard"),
        default="none",
        help="also log the summary's scalars through this TorchRL logger into OUT/logs "
        "(tensorboard needs `pip install tensorboard`); default: none",
    )
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    pendulum = explain.add_argument_group("double_pendulum options")
    pendulum.add_argument(
        "--steps", type=int, help="environment steps per copy in the attribution rollout (1000)"
    )
    pendulum.add_argument("--envs", type=int, help="environment copies (4)")
    pendulum.add_argument("--episodes", type=int, help="paired episodes per ablation (4)")
    pendulum.add_argument("--groups", type=int, help="unit groups per hidden layer (4)")
    pendulum.add_argument(
        "--ablation-steps", type=int, help="step cap of each ablation episode (300)"
    )
    pendulum.add_argument(
        "--probes", action=argparse.BooleanOptionalAction, help="probe the hidden layers (on)"
    )
    pendulum.add_argument(
        "--ablation", action=argparse.BooleanOptionalAction, help="run the ablation sweep (on)"
    )

    games = explain.add_argument_group("chess and connect_four options")
    games.add_argument(
        "--positions",
        type=int,
        help="chess: how many held-out positions to explain (8, or 0 with --fen); "
        "connect_four: the figure of a game shows at most its last N agent moves (8)",
    )
    games.add_argument(
        "--fen",
        action="append",
        metavar="FEN",
        help="chess: explain this position (repeatable; explained before the held-out ones)",
    )
    games.add_argument("--games", type=int, help="connect_four: games to play (2)")
    games.add_argument(
        "--opponent",
        choices=("random", "greedy"),
        help="connect_four: the scripted opponent (random)",
    )
    commands.add_parser(
        "agents",
        help="list the shipped agents",
        description="List the agents shipped with tdhook_rl.",
    )
    return parser


def _specific_values(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The agent-specific options: given ones checked, the others at the agent's default."""
    explainer = EXPLAINERS[name]
    values = {}
    for dest in sorted({d for e in EXPLAINERS.values() for d in e.specific}):
        given = getattr(args, dest)
        flag = "--" + dest.replace("_", "-")
        if dest not in explainer.specific:
            if given is not None:
                users = [n for n, e in EXPLAINERS.items() if dest in e.specific]
                raise UsageError(
                    f"{flag} does not apply to --agent {name} (only to {', '.join(users)})"
                )
            continue
        if given is not None and dest in MINIMUM and given < MINIMUM[dest]:
            raise UsageError(f"{flag} must be >= {MINIMUM[dest]}")
        values[dest] = explainer.specific[dest] if given is None else given
    return values


def _load_agent(name: str, args: argparse.Namespace) -> Any:
    checkpoint: Path | None = args.checkpoint
    if checkpoint is not None and not checkpoint.exists():
        raise UsageError(f"checkpoint {checkpoint} does not exist")
    if args.network is not None:
        from tdhook_rl.report.networks import NetworkError, import_callable, load_network

        try:
            import_callable(args.network)  # a bad import path is reported first
            if checkpoint is None:
                raise UsageError("--network needs --checkpoint (the weights to load into it)")
            return load_network(name, args.network, checkpoint, args.device)
        except NetworkError as err:
            raise UsageError(str(err)) from None
    model = importlib.import_module(f"tdhook_rl.agents.{name}.model")
    try:
        return model.load(device=args.device, checkpoint=checkpoint)
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"checkpoint {checkpoint} does not match the {name} network: {first}"
        ) from err


def _explain(args: argparse.Namespace) -> int:
    from tdhook_rl.report.scalars import require_logger

    try:  # before any work: a missing logger package leaves nothing behind
        require_logger(args.logger)
    except ImportError as err:
        raise UsageError(str(err)) from None
    from tdhook_rl import agents
    from tdhook_rl.attribution import METHODS

    name = args.agent
    if name not in EXPLAINERS:
        available = agents.available()
        if name in available:
            raise UsageError(
                f"`tdhook-rl explain` does not cover the {name!r} agent yet; it explains: "
                f"{', '.join(EXPLAINERS)}"
            )
        raise UsageError(f"unknown agent {name!r}; shipped agents: {', '.join(available)}")
    if args.method not in METHODS:
        raise UsageError(f"unknown method {args.method!r}; choose one of {', '.join(METHODS)}")
    if args.n_steps < MINIMUM["n_steps"]:
        raise UsageError(f"--n-steps must be >= {MINIMUM['n_steps']}")
    values = {
        "method": args.method,
        "n_steps": args.n_steps,
        "seed": args.seed,
        "device": args.device,
        "logger": None if args.logger == "none" else args.logger,
        **_specific_values(name, args),
    }
    explainer = EXPLAINERS[name]
    try:
        explainer.make_options(values)  # validates (e.g. --fen) before the agent loads
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
    agent = _load_agent(name, args)
    _, _, line = explainer(agent, args.out, values, progress=not args.quiet)
    print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tdhook-rl`` console script.

    Examples:
        >>> main(["agents"])
        chess
        connect_four
        double_pendulum
        0
    """
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
