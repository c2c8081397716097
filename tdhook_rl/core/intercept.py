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

__all__ = ["Interception", "intercepting"]


class Interception:
    """``fn`` applied to the output (or first positional input) of ``module``.

    Args:
        module: the submodule.
        fn: ``value -> new value`` (a replacement; returning ``None`` keeps the value), or a
            reader of the value with ``observe=True`` (what it returns is ignored).
        io: ``"output"`` or ``"input"`` (the first positional argument).
        observe: ``fn`` only reads the value, after every replacement at this site.
    """

    __slots__ = ("fn", "io", "module", "observe")

    def __init__(
        self,
        module: nn.Module,
        fn: Callable[[Any], Any],
        io: Literal["output", "input"] = "output",
        observe: bool = False,
    ) -> None:
        if io not in ("output", "input"):
            raise ValueError(f"io must be 'output' or 'input', got {io!r}")
        self.module, self.fn, self.io, self.observe = module, fn, io, observe


class _Active(NamedTuple):
    """This thread's interceptions at one site: replacements, then observers."""

    replace: list[Callable[[Any], Any]]
    observe: list[Callable[[Any], Any]]


class _Registration:
    """The hook on one submodule, shared by every thread's users of that site."""

    __slots__ = ("handle", "module", "users")

    def __init__(self, module: nn.Module, io: str) -> None:
        self.module = module  # held so that its id is not reused while registered
        if io == "output":
            self.handle: RemovableHandle = module.register_forward_hook(_after_forward)
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
            (lists.observe if item.observe else lists.replace).append(item.fn)

    def __exit__(self, *exc: object) -> None:
        active = getattr(_local, "active", None) or {}
        for key, item in zip(reversed(self._keys), reversed(self._items), strict=False):
            lists = active.get(key)
            if lists is None:
                continue
            fns = lists.observe if item.observe else lists.replace
            for i in range(len(fns) - 1, -1, -1):  # this block's entry: the latest of this fn
                if fns[i] is item.fn:
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


def _after_forward(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    lists = _mine(module, "output")
    if lists is None:  # another thread's hook, or nothing left to do
        return None
    value = output
    for fn in tuple(lists.replace):  # a copy: fn may run the module again (re-entrant)
        new = fn(value)
        value = value if new is None else new
    for fn in tuple(lists.observe):
        fn(value)
    return None if value is output else value


def _before_forward(module: nn.Module, args: tuple[Any, ...]) -> Any:
    lists = _mine(module, "input")
    if lists is None:
        return None
    first = value = args[0] if args else None
    for fn in tuple(lists.replace):
        new = fn(value)
        value = value if new is None else new
    for fn in tuple(lists.observe):
        fn(value)
    return None if value is first else (value, *args[1:])
