"""Grad-mode handling: collectors run policies under ``no_grad`` and evaluators under
``inference_mode``; attribution needs gradients locally without leaking them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Enables autograd inside ``no_grad`` *and* ``inference_mode`` regions.

    Both switches are needed: ``enable_grad`` alone cannot record operations on inference
    tensors, ``inference_mode(False)`` alone keeps ``no_grad``. Tensors created under
    inference mode must still be cloned inside this context before they enter a graph.

    Examples:
        >>> with torch.inference_mode():
        ...     with gradients_enabled():
        ...         x = torch.ones(2, requires_grad=True)
        ...         (x * 2).sum().requires_grad
        True
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def inside_functional_transform() -> bool:
    """True while a functorch transform (``vmap``, ``grad``) is running, outside compilation.

    Value estimators such as GAE call the critic under ``vmap``; attribution must stand aside
    there. Dynamo also pushes onto the interpreter stack while it compiles, so a compiled run
    is not mistaken for a transform.
    """
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None
