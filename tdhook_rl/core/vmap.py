"""Tensors seen inside ``torch.vmap``: telling a slice from a tensor, and the whole behind it.

A hook on a module that runs under ``torch.vmap`` (TorchRL's ``MultiAgentMLP`` and
``MultiAgentConvNet`` with ``share_params=False`` run each agent's network that way) sees one
slice of a batched tensor, whose shape lacks the vmapped dimension.
"""

from __future__ import annotations

import torch

__all__ = ["is_vmapped", "transform_depth", "whole_tensor"]

_functorch = torch._C._functorch
_is_batched = getattr(_functorch, "is_batchedtensor", None)
_depth = getattr(_functorch, "get_dynamic_layer_stack_depth", None)


def transform_depth() -> int:
    """How many functorch transforms (``vmap``, ``jvp``, ``grad``) the current code runs under.

    Examples:
        >>> seen = []
        >>> _ = torch.vmap(lambda x: seen.append(transform_depth()) or x)(torch.zeros(3))
        >>> seen, transform_depth()
        ([1], 0)
    """
    return 0 if _depth is None else int(_depth())


def is_vmapped(value: torch.Tensor) -> bool:
    """True for a slice seen inside ``torch.vmap`` (a functorch batched tensor).

    Examples:
        >>> seen = []
        >>> _ = torch.vmap(lambda x: seen.append(is_vmapped(x)) or x)(torch.zeros(3, 2))
        >>> seen, is_vmapped(torch.zeros(3, 2))
        ([True], False)
    """
    return _is_batched is not None and _is_batched(value)


def whole_tensor(value: torch.Tensor, position: int) -> torch.Tensor | None:
    """The tensor behind the slice ``value`` of one ``torch.vmap``, with the vmapped dimension
    at ``position``; ``None`` when ``value`` is a slice of a slice (nested vmaps).

    Examples:
        >>> kept = {}
        >>> _ = torch.vmap(lambda x: kept.setdefault("x", x * 2))(torch.ones(3, 2))
        >>> whole_tensor(kept["x"], 1).shape
        torch.Size([2, 3])
    """
    physical = _functorch.get_unwrapped(value)
    if is_vmapped(physical):
        return None
    return physical.movedim(_functorch.maybe_get_bdim(value), position)
