"""The one registry of the TorchRL loggers tdhook_rl builds by name (``"csv"``,
``"tensorboard"``, ...), for the command, the report writer and the training callback.

It imports neither torch nor torchrl, so the command's ``--help`` stays fast.

Examples:
    >>> LOGGER_BACKENDS["csv"].cls
    'CSVLogger'
    >>> LOGGERS
    ('none', 'csv', 'tensorboard')
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LOGGERS", "LOGGER_BACKENDS", "LoggerBackend"]


class LoggerBackend(NamedTuple):
    """A TorchRL logger that tdhook_rl builds by name."""

    cls: str
    """its class in ``torchrl.record.loggers``"""
    package: str | None
    """the package it needs beyond torchrl, ``None`` if none"""
    local: bool
    """it only writes files (no account, no server): the command offers it"""


#: the one registry of logger names, for the command and for
#: :class:`~tdhook_rl.callbacks.InterpretabilityCallback`
LOGGER_BACKENDS: dict[str, LoggerBackend] = {
    "csv": LoggerBackend("CSVLogger", None, local=True),
    "tensorboard": LoggerBackend("TensorboardLogger", "tensorboard", local=True),
    "wandb": LoggerBackend("WandbLogger", "wandb", local=False),
}
#: the ``--logger`` choices of the command and of the report writer ("none": no logger)
LOGGERS: tuple[str, ...] = ("none", *(n for n, b in LOGGER_BACKENDS.items() if b.local))
