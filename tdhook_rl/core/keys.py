"""Normalization of TensorDict keys given by users (``"obs"``, ``("agents", "obs")``)."""

from __future__ import annotations

from tensordict import NestedKey
from tensordict.utils import unravel_key


def as_key(key: object, what: str = "key") -> NestedKey:
    """Returns ``key`` as a canonical TensorDict key, or raises a ``TypeError`` naming ``what``.

    Examples:
        >>> as_key(("a", ("b",)))
        ('a', 'b')
        >>> as_key("observation")
        'observation'
    """
    if isinstance(key, str):
        return key
    if isinstance(key, tuple) and key:
        try:
            return unravel_key(key)
        except Exception as err:  # tensordict raises several types here
            raise TypeError(f"{what} {key!r} is not a valid TensorDict key: {err}") from err
    raise TypeError(
        f"{what} must be a string or a non-empty tuple of strings (a nested key), got {key!r}"
    )


def key_tuple(key: NestedKey) -> tuple[str, ...]:
    """Returns a key as a tuple of strings: ``"a"`` -> ``("a",)``."""
    return (key,) if isinstance(key, str) else tuple(key)
