"""Hooks that exist only for the duration of one call and are always removed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

HookFn = Callable[[nn.Module, tuple[Any, ...], Any], Any]
PreHookFn = Callable[[nn.Module, tuple[Any, ...]], Any]


@contextmanager
def temporary_hooks(
    forward_hooks: Sequence[tuple[nn.Module, HookFn]] = (),
    pre_hooks: Sequence[tuple[nn.Module, PreHookFn]] = (),
) -> Iterator[None]:
    """Registers forward hooks and pre-hooks, and removes them on exit, exceptions included.

    Examples:
        >>> import torch
        >>> seen = []
        >>> lin = torch.nn.Linear(2, 2)
        >>> with temporary_hooks([(lin, lambda m, args, out: seen.append(out.shape))]):
        ...     _ = lin(torch.zeros(3, 2))
        >>> seen, len(lin._forward_hooks)
        ([torch.Size([3, 2])], 0)
    """
    with ExitStack() as stack:
        for module, fn in forward_hooks:
            stack.callback(module.register_forward_hook(fn).remove)
        for module, pre in pre_hooks:
            stack.callback(module.register_forward_pre_hook(pre).remove)
        yield
