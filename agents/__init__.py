"""Trained reference agents (installed as ``tdhook_rl.agents``, source in ``agents/``).

Each agent lives in its own subpackage ``agents/<name>/`` with its training script, a small
checkpoint, a ``QUALITY.md`` with its measured quality, and a ``load(device="cpu")``
function. :func:`load` finds it by name.

Examples:
    >>> from tdhook_rl import agents
    >>> isinstance(agents.available(), list)
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any

__all__ = ["available", "load"]


def available() -> list[str]:
    """Names of the agents that ship a loader."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg and importlib.util.find_spec(f"{__name__}.{info.name}.model"):
            names.append(info.name)
    return sorted(names)


def load(name: str, device: str = "cpu", **kwargs: Any) -> Any:
    """Loads the shipped agent ``name`` (see :func:`available`) onto ``device``."""
    names = available()
    if name not in names:
        raise ValueError(f"unknown agent {name!r}; shipped agents: {names}")
    module = importlib.import_module(f"{__name__}.{name}.model")
    return module.load(device=device, **kwargs)
