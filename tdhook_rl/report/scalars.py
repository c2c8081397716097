"""The summary's scalars, logged through a TorchRL logger (``--logger csv|tensorboard``).

:func:`summary_scalars` walks a summary (the dict written to ``summary.json``): numbers at
any depth of nested dicts become one scalar each, named by their path (``"a/b"``, step 0);
a list of dicts (one per position, probe, ablation...) becomes one series per numeric
field, the list index being the step. Strings, booleans and plain lists of numbers (board
maps) are left out: they are in ``summary.json``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tdhook_rl.core.loggers import LOGGER_BACKENDS, LOGGERS

__all__ = [
    "log_summary",
    "require_logger",
    "summary_scalars",
]


def require_logger(kind: str | None) -> None:
    """Checks that logger ``kind`` can be built here, before any work is done.

    Raises:
        ValueError: an unknown kind.
        ImportError: a logger whose package is missing (``"tensorboard"`` without
            ``tensorboard``).

    Examples:
        >>> require_logger("csv")
        >>> require_logger("wandb")
        Traceback (most recent call last):
        ...
        ValueError: unknown logger 'wandb'; choose one of none, csv, tensorboard
    """
    if kind is None:
        return
    if kind not in LOGGERS:
        raise ValueError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGERS)}")
    package = LOGGER_BACKENDS[kind].package if kind != "none" else None
    if package is not None and importlib.util.find_spec(package) is None:
        raise ImportError(f"--logger {kind} needs the `{package}` package (pip install {package})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary_scalars(
    summary: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, float, int]]:
    """``(name, value, step)`` for every scalar of ``summary`` (see the module docstring).

    Examples:
        >>> list(summary_scalars({"a": 1.5, "runs": [{"r": 2}, {"r": 3, "name": "x"}],
        ...                       "map": [[1, 2]], "ok": True}))
        [('a', 1.5, 0), ('runs/r', 2.0, 0), ('runs/r', 3.0, 1)]
    """
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if _is_number(value):
            yield name, float(value), 0
        elif isinstance(value, Mapping):
            yield from summary_scalars(value, f"{name}/")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for step, item in enumerate(value):
                for sub, number, _ in _flat(item, f"{name}/"):
                    yield sub, number, step


def _flat(item: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, float, int]]:
    # inside a series element: nested dicts are followed, nested lists are not
    for key, value in item.items():
        if _is_number(value):
            yield f"{prefix}{key}", float(value), 0
        elif isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}/")


def log_summary(summary: Mapping[str, Any], folder: str | Path, kind: str) -> Path:
    """Logs :func:`summary_scalars` with TorchRL's ``get_logger(kind, ...)`` under ``folder``.

    Args:
        summary: the summary numbers.
        folder: the log folder (the logger writes ``folder/explain/...``).
        kind: ``"csv"`` or ``"tensorboard"``.

    Returns:
        the experiment's folder.

    Examples:
        >>> import tempfile
        >>> path = log_summary({"score": 0.5}, tempfile.mkdtemp(), "csv")
        >>> (path / "scalars" / "score.csv").read_text()
        '0,0.5\\n'
    """
    require_logger(kind)
    from torchrl.record.loggers import get_logger

    logger = get_logger(kind, logger_name=str(folder), experiment_name="explain")
    for name, value, step in summary_scalars(summary):
        logger.log_scalar(name, value, step=step)
    experiment = logger.experiment
    if hasattr(experiment, "close"):  # tensorboard's SummaryWriter
        experiment.close()
    for handle in getattr(experiment, "files", {}).values():  # the CSV logger's open files
        handle.close()
    return Path(folder) / "explain"
