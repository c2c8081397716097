"""Seeing or replacing what a submodule receives or returns, for one call of one thread.

Every wrapper that reaches inside a network (``Recorded``, ``Intervened``, patching, hidden-site
attribution) goes through :class:`intercepting`. It is safe when one module serves several
threads at once (a collector's thread and an evaluation thread):

* the interceptions live on a per-thread stack, keyed by submodule, so a call sees only the
  interceptions its own thread entered;
* one forward hook (or pre-hook) per submodule dispatches to that stack; it is registered when
  the first user of any thread arrives and removed when the last leaves (a count under a
  lock), exceptions included, so nothing stays on the user's module and it still pickles.

At one site, replacements apply in the order they were entered, and observers then see the
value the network actually goes on with, whichever wrapper is outside the other.

One limit: a copy of the module taken *while* another thread is inside an interception
(``copy.deepcopy``, ``pickle``) carries that hook along; it does nothing there (no thread has
interceptions on the copy), but stays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Interception", "intercepting", "pick", "put"]


class Interception:
    """``fn`` applied to the output (or first positional input) of ``module``.

    Args:
        module: the submodule.
        fn: ``value -> new value`` (a replacement; returning ``None`` keeps the value), or a
            reader of the value with ``observe=True`` (what it returns is ignored).
        io: ``"output"`` or ``"input"`` (the first positional argument).
        observe: ``fn`` only reads the value, after every replacement at this site.
        with_inputs: (``io="output"`` only) ``fn`` is called as ``fn(value, args, kwargs)``
            with everything the module was called with (e.g. to tie the output to all its
            inputs, as LRP rules do).
        element: indices into a tuple value (an LSTM's ``(out, (h, c))``: ``(1, 0)`` is
            ``h``): ``fn`` sees that element, and a replacement rebuilds the tuple around it.

    Examples:
        >>> import torch
        >>> lstm = nn.LSTM(2, 3)
        >>> with intercepting([Interception(lstm, torch.zeros_like, element=(1, 0))]):
        ...     out, (h, c) = lstm(torch.ones(4, 1, 2))
        >>> bool(h.eq(0).all()), bool(out.eq(0).all())   # only h was replaced
        (True, False)
    """

    __slots__ = ("element", "fn", "io", "module", "observe", "with_inputs")

    def __init__(
        self,
        module: nn.Module,
        fn: Callable[..., Any],
        io: Literal["output", "input"] = "output",
        observe: bool = False,
        with_inputs: bool = False,
        element: tuple[int, ...] = (),
    ) -> None:
        if io not in ("output", "input"):
            raise ValueError(f"io must be 'output' or 'input', got {io!r}")
        if with_inputs and io != "output":
            raise ValueError("with_inputs=True needs io='output' (the inputs come with it)")
        if with_inputs and element:
            raise ValueError("with_inputs=True sees the whole output: give no element")
        self.module, self.fn, self.io, self.observe = module, fn, io, observe
        self.with_inputs = with_inputs
        self.element = tuple(element)

    def apply(self, value: Any, *inputs: Any) -> Any:
        """``fn`` on ``value`` (its element); the new value, or ``None`` to keep it."""
        if self.with_inputs:
            return self.fn(value, *inputs)
        if not self.element:
            return self.fn(value)
        new = self.fn(pick(value, self.element, self.module))
        return None if new is None or self.observe else put(value, self.element, new)


def pick(value: Any, element: tuple[int, ...], module: nn.Module | None = None) -> Any:
    """``value[element[0]][element[1]]...``, with an error naming the module if it is not
    there."""
    whole = value
    for i in element:
        if not isinstance(value, tuple | list) or not -len(value) <= i < len(value):
            what = type(module).__name__ if module is not None else "the module"
            raise ValueError(
                f"{what} gives {_shape_of(whole)}, which has no element {element}: index "
                "its output as it is nested, e.g. 'lstm[1][0]' for an LSTM's h"
            )
        value = value[i]
    return value


def put(value: Any, element: tuple[int, ...], new: Any) -> Any:
    """A copy of the tuple ``value`` with ``element`` replaced by ``new``."""
    if not element:
        return new
    parts = list(value)
    parts[element[0]] = put(parts[element[0]], element[1:], new)
    return type(value)(parts) if isinstance(value, list) else tuple(parts)


def _shape_of(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_shape_of(v) for v in value) + ")"
    return type(value).__name__


class _Active(NamedTuple):
    """This thread's interceptions at one site: replacements, then observers."""

    replace: list[Interception]
    observe: list[Interception]


class _Registration:
    """The hook on one submodule, shared by every thread's users of that site."""

    __slots__ = ("handle", "module", "users")

    def __init__(self, module: nn.Module, io: str) -> None:
        self.module = module  # held so that its id is not reused while registered
        if io == "output":
            self.handle: RemovableHandle = module.register_forward_hook(
                _after_forward, with_kwargs=True
            )
        else:
            self.handle = module.register_forward_pre_hook(_before_forward)
        self.users = 0  # changed under _lock only


_lock = threading.Lock()
_registered: dict[tuple[int, str], _Registration] = {}
_local = threading.local()


class intercepting:  # lower case: used like a function, ``with intercepting([...]):``
    """The interceptions are active for this thread inside the block; on exit (exceptions
    included) they are gone, and so is every hook no other thread still needs.

    Examples:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> seen = []
        >>> with intercepting([Interception(lin, torch.zeros_like),
        ...                    Interception(lin, seen.append, observe=True)]):
        ...     out = lin(torch.ones(1, 2))
        >>> out.abs().sum().item(), seen[0].abs().sum().item(), len(lin._forward_hooks)
        (0.0, 0.0, 0)
    """

    __slots__ = ("_items", "_keys")

    def __init__(self, interceptions: Iterable[Interception]) -> None:
        self._items = list(interceptions)
        self._keys: list[tuple[int, str]] = []

    def __enter__(self) -> None:
        keys = [(id(item.module), item.io) for item in self._items]
        with _lock:  # one registration per site, counted over every thread's users
            try:
                for key, item in zip(keys, self._items, strict=True):
                    registration = _registered.get(key)
                    if registration is None:
                        registration = _registered[key] = _Registration(item.module, item.io)
                    registration.users += 1
                    self._keys.append(key)
            except BaseException:  # e.g. a module that refuses hooks: undo the others
                _release(self._keys)
                self._keys.clear()
                raise
        active: dict[tuple[int, str], _Active] | None = getattr(_local, "active", None)
        if active is None:
            active = _local.active = {}
        for key, item in zip(keys, self._items, strict=True):
            lists = active.get(key)
            if lists is None:
                lists = active[key] = _Active([], [])
            (lists.observe if item.observe else lists.replace).append(item)

    def __exit__(self, *exc: object) -> None:
        active = getattr(_local, "active", None) or {}
        for key, item in zip(reversed(self._keys), reversed(self._items), strict=False):
            lists = active.get(key)
            if lists is None:
                continue
            fns = lists.observe if item.observe else lists.replace
            for i in range(len(fns) - 1, -1, -1):  # this block's entry: its latest
                if fns[i] is item:
                    del fns[i]
                    break
            if not lists.replace and not lists.observe:
                del active[key]
        with _lock:
            _release(self._keys)
        self._keys.clear()


def _release(keys: list[tuple[int, str]]) -> None:
    """Drops one user of each site (the caller holds ``_lock``); the last removes the hook."""
    for key in keys:
        registration = _registered[key]
        registration.users -= 1
        if registration.users == 0:
            registration.handle.remove()
            del _registered[key]


def _mine(module: nn.Module, io: str) -> _Active | None:
    active = getattr(_local, "active", None)
    return None if not active else active.get((id(module), io))


def _after_forward(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> Any:
    lists = _mine(module, "output")
    if lists is None:  # another thread's hook, or nothing left to do
        return None
    value = output
    for item in tuple(lists.replace):  # a copy: fn may run the module again (re-entrant)
        new = item.apply(value, args, kwargs)
        value = value if new is None else new
    for item in tuple(lists.observe):
        item.apply(value, args, kwargs)
    return None if value is output else value


def _before_forward(module: nn.Module, args: tuple[Any, ...]) -> Any:
    lists = _mine(module, "input")
    if lists is None:
        return None
    first = value = args[0] if args else None
    for item in tuple(lists.replace):
        new = item.apply(value)
        value = value if new is None else new
    for item in tuple(lists.observe):
        item.apply(value)
    return None if value is first else (value, *args[1:])
