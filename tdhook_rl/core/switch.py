"""Thread-local on/off switches: turn a kind of wrapper off for a block of code, for every
wrapper of that kind or for one of them, without touching the wrappers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Switch:
    """Turns wrappers of one kind off inside ``with`` blocks, per thread (and per asyncio task).

    The state lives in :class:`contextvars.ContextVar` s, never on a wrapper: a block that
    turns attribution off in the training thread leaves a collector thread attributing, and
    the wrappers pickle as before. Blocks nest and restore the previous state on exit, also on
    an exception.

    Args:
        name: what is switched (it names the context variables).

    Examples:
        >>> switch = Switch("demo")
        >>> wrapper = object()
        >>> switch.is_off(wrapper)
        False
        >>> with switch.off():
        ...     switch.is_off(wrapper)
        True
        >>> with switch.off(wrapper):
        ...     switch.is_off(wrapper), switch.is_off(object())
        (True, False)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._all: ContextVar[bool] = ContextVar(f"tdhook_rl_{name}_all_off", default=False)
        self._some: ContextVar[frozenset[int]] = ContextVar(
            f"tdhook_rl_{name}_off", default=frozenset()
        )

    @contextmanager
    def off(self, wrapper: object | None = None) -> Iterator[None]:
        """Off for every wrapper (``wrapper=None``) or for one, until the block ends."""
        if wrapper is None:
            token_all = self._all.set(True)
            try:
                yield
            finally:
                self._all.reset(token_all)
            return
        # ids are safe here: the block holds a reference to ``wrapper`` while its id is listed
        token = self._some.set(self._some.get() | {id(wrapper)})
        try:
            yield
        finally:
            self._some.reset(token)

    def is_off(self, wrapper: object) -> bool:
        """True inside an ``off()`` block, or an ``off(wrapper)`` block for this wrapper."""
        return self._all.get() or id(wrapper) in self._some.get()

    def __repr__(self) -> str:
        return f"Switch({self.name!r})"
