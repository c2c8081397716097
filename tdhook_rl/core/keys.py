"""Normalization of TensorDict keys given by users (``"obs"``, ``("agents", "obs")``), and the
one way an entry is read with a message that lists what the TensorDict holds."""

from __future__ import annotations

import torch
from tensordict import NestedKey, TensorDictBase


def as_key(key: object, what: str = "key") -> NestedKey:
    """Returns ``key`` as a canonical TensorDict key, or raises a ``TypeError`` naming ``what``.

    Every part must be a non-empty string (nested tuples are flattened): an integer part is
    refused rather than dropped, so ``("action", 5)`` never silently becomes ``"action"``
    (write ``Index("action", 5)`` for an entry of a vector).

    Examples:
        >>> as_key(("a", ("b",)))
        ('a', 'b')
        >>> as_key("observation")
        'observation'
        >>> as_key(("agents", 3, "obs"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: key ('agents', 3, 'obs') has a part 3 that is not a string; ...
    """
    if isinstance(key, str) and key:
        return key
    if isinstance(key, tuple) and key:
        parts = _flatten(key, what)
        return parts[0] if len(parts) == 1 else parts
    raise TypeError(
        f"{what} must be a string or a non-empty tuple of strings (a nested key), got {key!r}"
    )


def _flatten(key: tuple, what: str) -> tuple[str, ...]:
    parts: list[str] = []
    for part in key:
        if isinstance(part, tuple) and part:
            parts.extend(_flatten(part, what))
        elif isinstance(part, str) and part:
            parts.append(part)
        else:
            raise TypeError(
                f"{what} {key!r} has a part {part!r} that is not a string; a key is a string "
                "or a tuple of strings (for an entry of a vector use Index(key, i))"
            )
    return tuple(parts)


def key_tuple(key: NestedKey) -> tuple[str, ...]:
    """Returns a key as a tuple of strings: ``"a"`` -> ``("a",)``."""
    return (key,) if isinstance(key, str) else tuple(key)


def held_keys(td: TensorDictBase) -> str:
    """The leaf keys of ``td`` as error messages list them: ``['action', ('next', 'done')]``."""
    keys = sorted(td.keys(include_nested=True, leaves_only=True), key=str)
    return "[" + ", ".join(repr(k) for k in keys) + "]"


def read(td: TensorDictBase, key: NestedKey, who: str) -> torch.Tensor:
    """``td[key]`` as a tensor; a missing key is a ``KeyError`` that lists what ``td`` holds.

    Args:
        td: the TensorDict read.
        key: a canonical key (see :func:`as_key`).
        who: the reader, the subject of the message (``"label 'x'"``, ``"target 'value'"``).

    Examples:
        >>> from tensordict import TensorDict
        >>> read(TensorDict(a=torch.zeros(2), batch_size=[2]), "b", "label 'y'")
        Traceback (most recent call last):
        ...
        KeyError: "label 'y' reads key 'b', which is missing; the TensorDict holds ['a']"
    """
    value = td.get(key, None)
    if value is None:
        raise KeyError(
            f"{who} reads key {key!r}, which is missing; the TensorDict holds {held_keys(td)}"
        )
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{who} reads key {key!r}, which holds a {type(value).__name__}, not a tensor"
        )
    return value
