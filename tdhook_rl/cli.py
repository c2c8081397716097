"""The ``tdhook-rl`` command.

``tdhook-rl explain --agent NAME`` explains a trained agent and writes a report folder
(``report.html`` with the figures embedded, the PNGs, ``summary.json`` with every number
shown):

* ``double_pendulum`` (default): rolls the agent out, attributes its policy and value heads,
  probes its hidden layers for the physical state and runs an ablation sweep;
* ``chess``: attributes the chosen move and the win probability to the squares of a few
  positions (held-out ones, or ``--fen``);
* ``connect_four``: plays a few games against a scripted player and attributes every move
  and evaluation of the agent to the cells of the grid;
* ``breakout``: plays a few MinAtar Breakout episodes and writes Greydanus-style saliency
  movies (GIF) of the policy and the value, plus occlusion and gradient maps of a few frames.

Each job's flags are built from its options dataclass (:mod:`tdhook_rl.report.options`),
which holds their defaults, minimums and help. Options that belong to another agent are
refused (one line, exit status 2) rather than silently ignored, and so is an ``--out`` that
is a file or a folder holding anything but a previous report, before any work is done.
torch is imported only once a job runs: ``--help`` and usage errors answer at once.
``tdhook-rl agents`` lists the shipped agents.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tdhook_rl.report.options import (
    BreakoutOptions,
    ChessOptions,
    ConnectFourOptions,
    ExplainOptions,
    JobOptions,
    flag,
    option_help,
)
from tdhook_rl.report.writer import check_out_dir

__all__ = ["EXPLAINERS", "Explainer", "UsageError", "main"]


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


@dataclass(frozen=True)
class Explainer:
    """How ``tdhook-rl explain`` explains one agent; the job lives in ``module`` and is
    imported only when it runs.

    Attributes:
        module: the report module, holding the options class, ``run`` and ``summary_line``.
        options: the job's options dataclass (:mod:`tdhook_rl.report.options`): its fields
            beyond :class:`~tdhook_rl.report.options.JobOptions` are the agent's own flags.
            ``module`` holds a class of the same name (it, or a subclass checking more).
        run: the name of its job, ``run(agent, out_dir, options, progress=...) ->
            (report folder, summary)``.
        checkpoint_entries: the entries of a checkpoint of the agent (the dict its
            ``train.py`` saves), checked before the network is built.

    Examples:
        >>> sorted(EXPLAINERS)
        ['breakout', 'chess', 'connect_four', 'double_pendulum']
        >>> EXPLAINERS["connect_four"].specific
        {'games': 2, 'opponent': 'random', 'positions': 8, 'concepts': False}
        >>> EXPLAINERS["chess"].make_options({"positions": 2}).positions
        2
    """

    module: str
    options: type[JobOptions]
    run: str
    checkpoint_entries: tuple[str, ...]

    @property
    def specific(self) -> dict[str, Any]:
        """The agent's own options (argparse ``dest``) and their defaults."""
        common = {f.name for f in dataclasses.fields(JobOptions)}
        fields = dataclasses.fields(self.options)
        return {f.name: f.default for f in fields if f.name not in common}

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
        """The job's options (raises ``ValueError`` on a bad value); imports the job."""
        return getattr(importlib.import_module(self.module), self.options.__name__)(**values)


BOARD_ENTRIES = ("config", "state_dict")
EXPLAINERS: dict[str, Explainer] = {
    "double_pendulum": Explainer(
        "tdhook_rl.report.double_pendulum",
        ExplainOptions,
        "explain_double_pendulum",
        ("config", "actor", "critic", "obs_norm"),
    ),
    "chess": Explainer("tdhook_rl.report.chess", ChessOptions, "explain_chess", BOARD_ENTRIES),
    "connect_four": Explainer(
        "tdhook_rl.report.connect_four", ConnectFourOptions, "explain_connect_four", BOARD_ENTRIES
    ),
    "breakout": Explainer(
        "tdhook_rl.report.breakout", BreakoutOptions, "explain_breakout", BOARD_ENTRIES
    ),
}


def _add_option(
    group: Any, name: str, owners: Mapping[str, type[JobOptions]], *, common: bool = False
) -> None:
    """Adds the flag of field ``name`` of the options classes ``owners`` (agent -> class).

    An agent's own flag defaults to ``None`` (not given: the agent's default, and refused
    for the other agents); a ``common`` one to the field's default. Choices are checked by
    the options class, so that a bad value gets one line."""
    cls = next(iter(owners.values()))
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if len(owners) == 1:
        text = option_help(cls, name)
    else:
        text = "; ".join(f"{agent}: {option_help(c, name)}" for agent, c in owners.items())
    kwargs: dict[str, Any] = {"dest": name, "help": text, "default": None}
    kind = str(field.type)
    if kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind.startswith("Sequence"):
        kwargs.update(action="append", metavar=name.upper())
    else:
        kwargs.update(type=int if kind.startswith("int") else str)
        if field.metadata["choices"] is not None:
            kwargs["metavar"] = "{" + ",".join(field.metadata["choices"]) + "}"
    if common:
        kwargs["default"] = field.default
    group.add_argument(flag(name), **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdhook-rl",
        description="Explain trained TorchRL agents and write the findings as a report folder.",
    )
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
        help=f"one of {', '.join(EXPLAINERS)} (see 'tdhook-rl agents'); default: double_pendulum",
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
    for field in dataclasses.fields(JobOptions):
        _add_option(common, field.name, {"every agent": JobOptions}, common=True)
    common.add_argument(
        "--out",
        type=Path,
        default=Path("tdhook-rl-report"),
        help="report folder: a new or empty folder, or a previous report, which is replaced "
        "(default: ./tdhook-rl-report)",
    )
    common.add_argument(
        "--quiet", action="store_true", help="no progress bars (shown only on a terminal)"
    )
    # the agents' own options, one group per set of agents sharing a flag
    owners: dict[str, dict[str, type[JobOptions]]] = {}
    for agent, explainer in EXPLAINERS.items():
        for name in explainer.specific:
            owners.setdefault(name, {})[agent] = explainer.options
    groups: dict[tuple[str, ...], Any] = {}
    for name, by_agent in owners.items():
        agents = tuple(by_agent)
        if agents not in groups:
            title = " and ".join(agents) + " options"
            groups[agents] = explain.add_argument_group(title)
        _add_option(groups[agents], name, by_agent)
    commands.add_parser(
        "agents",
        help="list the shipped agents",
        description="List the agents shipped with tdhook_rl.",
    )
    return parser


def _specific_values(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The agent-specific options: the given ones, the others at the agent's default."""
    explainer = EXPLAINERS[name]
    values = {}
    for dest in sorted({d for e in EXPLAINERS.values() for d in e.specific}):
        given = getattr(args, dest)
        if dest not in explainer.specific:
            if given is not None:
                users = [n for n, e in EXPLAINERS.items() if dest in e.specific]
                raise UsageError(
                    f"{flag(dest)} does not apply to --agent {name} (only to {', '.join(users)})"
                )
            continue
        values[dest] = explainer.specific[dest] if given is None else given
    return values


def _shipped_agents() -> list[str]:
    """The agents' subpackages, listed without importing them (nor torch)."""
    from tdhook_rl import agents

    return sorted(i.name for i in pkgutil.iter_modules(agents.__path__) if i.ispkg)


def _check_checkpoint(name: str, path: Path) -> None:
    """Refuses a file that is no torch checkpoint holding the agent's entries."""
    import torch

    entries = EXPLAINERS[name].checkpoint_entries
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any failure to read it: not a torch checkpoint (or not one of tensors)
        state = None
    missing = [e for e in entries if e not in state] if isinstance(state, Mapping) else entries
    if missing:
        holds = f"; it holds {sorted(map(str, state))}" if isinstance(state, Mapping) else ""
        raise UsageError(
            f"checkpoint {path} is not a torch checkpoint of the {name} agent: expected a "
            f"file saved by its train.py, a dict with the entries {', '.join(entries)}{holds}"
        )


def _load_agent(name: str, args: argparse.Namespace) -> Any:
    checkpoint: Path | None = args.checkpoint
    if checkpoint is not None and not checkpoint.is_file():
        raise UsageError(f"checkpoint {checkpoint} does not exist or is not a file")
    if args.network is not None:
        from tdhook_rl.report.networks import NetworkError, import_callable, load_network

        try:
            import_callable(args.network)  # a bad import path is reported first
            if checkpoint is None:
                raise UsageError("--network needs --checkpoint (the weights to load into it)")
            return load_network(name, args.network, checkpoint, args.device)
        except NetworkError as err:
            raise UsageError(str(err)) from None
    if checkpoint is not None:
        _check_checkpoint(name, checkpoint)
    model = importlib.import_module(f"tdhook_rl.agents.{name}.model")
    try:
        return model.load(device=args.device, checkpoint=checkpoint)
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"checkpoint {checkpoint} does not match the {name} network: {first}"
        ) from err


def _explain(args: argparse.Namespace) -> int:
    name = args.agent
    if name not in EXPLAINERS:
        shipped = _shipped_agents()
        if name in shipped:
            raise UsageError(
                f"`tdhook-rl explain` does not cover the {name!r} agent yet; it explains: "
                f"{', '.join(EXPLAINERS)}"
            )
        raise UsageError(f"unknown agent {name!r}; shipped agents: {', '.join(shipped)}")
    common = {f.name: getattr(args, f.name) for f in dataclasses.fields(JobOptions)}
    values = {**common, **_specific_values(name, args)}
    explainer = EXPLAINERS[name]
    try:  # the declared minimums and choices, torch-free
        explainer.options(**values)
        check_out_dir(args.out)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    from tdhook_rl.report.scalars import require_logger

    try:  # before any work: a missing logger package leaves nothing behind
        require_logger(args.logger)
    except ImportError as err:
        raise UsageError(str(err)) from None
    try:
        explainer.make_options(values)  # the job's own checks (e.g. --fen), before the agent
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
    agent = _load_agent(name, args)
    progress = not args.quiet and sys.stderr.isatty()  # no bar escape codes in a log file
    _, _, line = explainer(agent, args.out, values, progress=progress)
    print(line)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the job cleans up as on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one waits for the clean-up
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tdhook-rl`` console script.

    Returns the exit status: 0, 2 for a usage error (one line on stderr), 130 on Ctrl-C and
    143 on SIGTERM (one line each, the unfinished report removed).

    Examples:
        >>> main(["agents"])
        breakout
        chess
        connect_four
        double_pendulum
        0
    """
    args = _parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
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
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        print(f"tdhook-rl: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if in_main:  # previous is None for a handler not installed from Python
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
