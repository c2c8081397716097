"""The target interface, the entry readers (:class:`Key`, :class:`Index`, :class:`FromCallable`),
the reduction to one scalar per sample, and the one parser of readout specs."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from torch import nn

from tdhook_rl.core.keys import as_key, read

SPELLINGS = (
    "a key of a per-sample scalar, a key followed by integer indices (('observation', 3), "
    "meaning Index('observation', 3)), Index(key, i), ActionLogProb(), ActionLoc(), "
    "ActionValue() or a callable td -> Tensor"
)


class Target(ABC):
    """Base class of targets: a readout of one scalar per sample from a module's output.

    Subclasses implement :meth:`__call__`; targets that resolve something in the wrapped
    module (a distribution, a Q-value module) subclass :class:`ModuleTarget` instead.
    """

    #: Entries of the original forward's output that :meth:`__call__` reads from ``reference``.
    reference_keys: tuple[NestedKey, ...] = ()
    _who: str | None = None

    def bind(self, module: nn.Module) -> Target:
        """Returns the target ready for ``module`` (a new object; ``self`` is never changed)."""
        return self

    @property
    def needs_module(self) -> bool:
        """True for a target that must be bound to a module before it can read anything."""
        return False

    @property
    def column(self) -> tuple[NestedKey, int] | None:
        """``(key, i)`` when the target is column ``i`` of a vector entry ``key`` (so several
        such targets are read by one gather), else ``None``."""
        return None

    @abstractmethod
    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        """Returns the target's value, one scalar per sample of ``output`` (a trailing
        dimension of size 1 is allowed)."""

    def hint(self) -> str:
        """A sentence telling how to fix a target that is not one scalar per sample."""
        return "Return one scalar per sample."

    def named(self, who: str) -> Target:
        """A copy whose error messages call it ``who`` (``"target 'value'"``)."""
        named = copy.copy(self)
        named._who = who
        return named

    @property
    def who(self) -> str:
        """The subject of this target's error messages: its name, else its repr."""
        return self._who if self._who is not None else repr(self)

    def describe(self) -> str:
        """``"target 'value' (Key('state_value'))"``, or the repr of an unnamed target."""
        return repr(self) if self._who is None else f"{self._who} ({self!r})"


class ModuleTarget(Target):
    """A target that resolves itself against the module in :meth:`bind`, which returns a new
    target that reads; the unbound one cannot be called."""

    @property
    def needs_module(self) -> bool:
        return True

    @abstractmethod
    def bind(self, module: nn.Module) -> Target: ...

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        raise RuntimeError(
            f"{self!r} must be bound to a module first (Attributed and activation_patching "
            "do this)."
        )


def per_sample(value: Any, batch: torch.Size, target: Target | str) -> torch.Tensor:
    """``value`` as one scalar per sample, shape ``batch``: a trailing size-1 dimension is
    dropped; anything else is a ``ValueError`` naming the target and how to fix it.

    Examples:
        >>> per_sample(torch.ones(3, 1), torch.Size([3]), "label 'x'")
        tensor([1., 1., 1.])
    """
    who = target.describe() if isinstance(target, Target) else target
    hint = f" {target.hint()}" if isinstance(target, Target) else ""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{who} gave a {type(value).__name__}, not a tensor")
    if value.shape == batch:
        return value
    if value.shape == (*batch, 1):
        return value.squeeze(-1)
    got = (
        f"per-sample shape {tuple(value.shape[len(batch) :])}"
        if value.shape[: len(batch)] == batch
        else f"shape {tuple(value.shape)} for batch shape {tuple(batch)}"
    )
    raise ValueError(
        f"{who} must give one scalar per sample (a trailing dimension of size 1 is fine), "
        f"got {got}.{hint}"
    )


def index_text(index: tuple[int, ...]) -> str:
    """An index as written in a repr: ``2`` or ``(2, 0)``."""
    return repr(index[0]) if len(index) == 1 else repr(index)


def select(
    value: torch.Tensor,
    batch_dims: int,
    index: tuple[int, ...],
    who: str,
    key: NestedKey | None = None,
) -> torch.Tensor:
    """``value[..batch.., *index]``: one entry of each sample's leading per-sample dims."""
    per_step = tuple(value.shape[batch_dims:])
    if len(per_step) < len(index) or not all(
        -size <= i < size for i, size in zip(index, per_step, strict=False)
    ):
        of = "" if key is None else f" of {key!r}"
        raise IndexError(
            f"{who}: index {index} is out of range: it falls outside the per-sample shape "
            f"{per_step}{of}."
        )
    at: tuple[Any, ...] = (*[slice(None)] * batch_dims, *index)
    return value[at]


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def as_index(index: Any, who: str) -> tuple[int, ...]:
    """``index`` as a non-empty tuple of ints (an int is a 1-tuple)."""
    if is_int(index):
        return (index,)
    if isinstance(index, tuple | list) and index and all(is_int(i) for i in index):
        return tuple(index)
    raise TypeError(f"{who} takes an int or a tuple of ints, got {index!r}")


class Key(Target):
    """The entry at ``key``, which must hold one scalar per sample (e.g. ``state_value``).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict(state_value=torch.tensor([[1.0], [2.0]]), batch_size=[2])
        >>> Key("state_value")(td, td)
        tensor([[1.],
                [2.]])
    """

    def __init__(self, key: NestedKey) -> None:
        self.key = as_key(key, "target key")

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        return read(output, self.key, self.who)

    def hint(self) -> str:
        return (
            f"To read one entry, pick one column with (key, index): ({self.key!r}, i) or "
            f"Index({self.key!r}, i)."
        )

    def __repr__(self) -> str:
        return f"Key({self.key!r})"


class Index(Target):
    """One entry of a vector (or tensor) output: ``td[key][..., index]``, where the index
    runs over the dimensions right after the batch. The spec ``(key, i)`` means the same.

    Args:
        key: the output entry, e.g. ``"logits"``.
        index: an ``int`` for a vector output, or a tuple of ints for a tensor output
            (indices into the leading per-sample dimensions).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict(logits=torch.arange(6.0).reshape(2, 3), batch_size=[2])
        >>> Index("logits", 2)(td, td)
        tensor([2., 5.])
    """

    def __init__(self, key: NestedKey, index: int | tuple[int, ...]) -> None:
        self.key = as_key(key, "target key")
        self.index = as_index(index, f"Index({self.key!r}, ...)")

    @property
    def column(self) -> tuple[NestedKey, int] | None:
        return (self.key, self.index[0]) if len(self.index) == 1 else None

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        value = read(output, self.key, self.who)
        return select(value, output.batch_dims, self.index, self.who, self.key)

    def __repr__(self) -> str:
        return f"Index({self.key!r}, {index_text(self.index)})"


class FromCallable(Target):
    """Any callable ``td -> Tensor`` returning one scalar per sample.

    Examples:
        >>> from tensordict import TensorDict
        >>> margin = FromCallable(lambda td: td["logits"].max(-1).values)
        >>> margin(TensorDict(logits=torch.eye(2), batch_size=[2]), None)
        tensor([1., 1.])
    """

    def __init__(self, fn: Callable[[TensorDictBase], torch.Tensor]) -> None:
        if not callable(fn):
            raise TypeError(f"FromCallable needs a callable td -> Tensor, got {fn!r}")
        self.fn = fn

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        value = self.fn(output)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{self.who} returned a {type(value).__name__}, not a tensor")
        return value

    def __repr__(self) -> str:
        return f"FromCallable({getattr(self.fn, '__name__', repr(self.fn))})"


def as_target(spec: Any) -> Target:
    """Turns a readout spec into a :class:`Target`; the one parser of targets, probe labels
    and patching heads.

    A spec is a :class:`Target`, a key (``"state_value"``, ``("next", "reward")``: the entry
    itself), a key followed by integer indices (``("observation", 3)``,
    ``(("sim", "qpos"), 1)``, ``("agents", "state_value", 2, 0)``,
    ``("logits", (1, 2))``: that entry, as :class:`Index`), or a callable ``td -> Tensor``.

    Examples:
        >>> as_target(("observation", 3))
        Index('observation', 3)
        >>> as_target(("agents", "state_value", 2, 0))
        Index(('agents', 'state_value'), (2, 0))
        >>> as_target(("next", "reward"))
        Key(('next', 'reward'))
    """
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        return Key(spec)
    if isinstance(spec, tuple) and spec:
        key, index = _split_index(spec)
        return Key(key) if not index else Index(key, index)
    if callable(spec) and not isinstance(spec, torch.Tensor | type):
        return FromCallable(spec)
    raise TypeError(f"a target must be {SPELLINGS}; got {spec!r}")


def _split_index(spec: tuple) -> tuple[Any, tuple[int, ...]]:
    """``(*key parts, *ints)`` or ``(key, (ints...))`` -> ``(key, ints)``."""
    last = spec[-1]
    if len(spec) >= 2 and isinstance(last, tuple | list) and last and all(map(is_int, last)):
        key, index = spec[:-1], tuple(last)
    else:
        n = len(spec)
        while n > 0 and is_int(spec[n - 1]):
            n -= 1
        key, index = spec[:n], tuple(spec[n:])
    if not key:
        raise TypeError(f"a target must be {SPELLINGS}; {spec!r} has no key")
    return key[0] if len(key) == 1 else key, index


def as_targets(
    targets: Mapping[str, Any] | Any, module: nn.Module | None = None, *, kind: str = "target"
) -> dict[str, Target]:
    """Normalizes ``targets``: a mapping ``name -> spec``, or a single spec named
    ``"target"``; each is parsed (:func:`as_target`), bound to ``module`` when one is given,
    and named ``f"{kind} {name!r}"`` in its error messages."""
    if not isinstance(targets, Mapping):
        targets = {"target": targets}
    if not targets:
        raise ValueError(f"{kind}s is empty: give at least one, e.g. {{'value': 'state_value'}}")
    out: dict[str, Target] = {}
    for name, spec in targets.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} names must be non-empty strings, got {name!r}")
        target = as_target(spec)
        if module is not None:
            target = target.bind(module)
        out[name] = target.named(f"{kind} {name!r}")
    return out
