"""What is explained: a per-sample scalar computed from the module's output TensorDict.

A target is called as ``target(output, reference)`` where ``output`` is the TensorDict the
wrapped module wrote during the attribution pass (flat batch) and ``reference`` holds the
entries of the original forward that the target asked for (``reference_keys``), e.g. the
action actually taken. It returns one scalar per sample: shape ``output.batch_size``, or that
shape with a trailing dimension of size 1.

Targets are given to :class:`tdhook_rl.Attributed` as a mapping ``name -> spec`` where the
spec is one of:

* a key (``"state_value"``, ``("agents", "value")``): the entry itself (see :class:`Key`);
* :class:`Index`: one entry of a vector output (a logit, a win-probability column);
* :class:`ActionLogProb`: the log-probability of the action that was taken;
* :class:`ActionValue`: the value (Q) a value-based actor gives the action that was taken;
* any callable ``td -> Tensor`` (see :class:`FromCallable`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictModule
from torch import nn

from tdhook_rl.core.keys import as_key

__all__ = [
    "ActionLogProb",
    "ActionValue",
    "FromCallable",
    "Index",
    "Key",
    "Target",
    "as_target",
    "as_targets",
]


class Target(ABC):
    """Base class of targets. Subclasses implement :meth:`__call__` and may override
    :meth:`bind` (resolve things in the wrapped module once) and ``reference_keys``."""

    #: Entries of the original forward's output that :meth:`__call__` reads from ``reference``.
    reference_keys: tuple[NestedKey, ...] = ()

    def bind(self, module: nn.Module) -> Target:
        """Returns the target ready for ``module`` (a new object; ``self`` is never changed)."""
        return self

    @abstractmethod
    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        """Returns the target's value, one scalar per sample of ``output``."""

    def hint(self) -> str:
        """A sentence telling how to fix a target that is not one scalar per sample."""
        return "Return one scalar per sample."


def _read(td: TensorDictBase, key: NestedKey, who: str) -> torch.Tensor:
    value = td.get(key, None)
    if value is None:
        available = sorted(str(k) for k in td.keys(include_nested=True, leaves_only=True))
        raise KeyError(
            f"{who} reads {key!r}, which the module's output does not contain. "
            f"Available keys: {available}."
        )
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{who} reads {key!r}, which is a {type(value).__name__}, not a tensor.")
    return value


def _index_text(index: tuple[int, ...]) -> str:
    """An index as written in a repr: ``2`` or ``(2, 0)``."""
    return repr(index[0]) if len(index) == 1 else repr(index)


def _select(value: torch.Tensor, batch_dims: int, index: tuple[int, ...], who: str) -> torch.Tensor:
    """``value[..batch.., *index]``: one entry of each sample's leading per-sample dims."""
    per_sample = tuple(value.shape[batch_dims:])
    if len(per_sample) < len(index) or not all(
        -size <= i < size for i, size in zip(index, per_sample, strict=False)
    ):
        raise IndexError(
            f"{who}: index {index} is outside the per-sample shape {per_sample} (batch "
            f"{tuple(value.shape[:batch_dims])})."
        )
    at: tuple[Any, ...] = (*[slice(None)] * batch_dims, *index)
    return value[at]


def _as_index(index: Any, who: str) -> tuple[int, ...]:
    """``index`` as a non-empty tuple of ints (an int is a 1-tuple)."""
    if isinstance(index, int) and not isinstance(index, bool):
        return (index,)
    if (
        isinstance(index, tuple | list)
        and index
        and all(isinstance(i, int) and not isinstance(i, bool) for i in index)
    ):
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
        return _read(output, self.key, f"target key {self.key!r}")

    def hint(self) -> str:
        return f"To explain one entry of {self.key!r}, use Index({self.key!r}, i)."

    def __repr__(self) -> str:
        return f"Key({self.key!r})"


class Index(Target):
    """One entry of a vector (or tensor) output: ``td[key][..., index]``.

    Args:
        key: the output entry, e.g. ``"logits"``.
        index: an ``int`` for a vector output, or a tuple of ints for a tensor output
            (indices into the trailing, per-sample dimensions).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict(logits=torch.arange(6.0).reshape(2, 3), batch_size=[2])
        >>> Index("logits", 2)(td, td)
        tensor([2., 5.])
    """

    def __init__(self, key: NestedKey, index: int | tuple[int, ...]) -> None:
        self.key = as_key(key, "target key")
        self.index = _as_index(index, f"Index({self.key!r}, ...)")

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        value = _read(output, self.key, f"Index({self.key!r}, ...)")
        per_sample = value.shape[output.batch_dims :]
        if len(per_sample) < len(self.index):
            raise ValueError(
                f"Index({self.key!r}, {self.index}) indexes {len(self.index)} dimension(s) but "
                f"{self.key!r} has per-sample shape {tuple(per_sample)}."
            )
        for i, size in zip(self.index, per_sample, strict=False):
            if not -size <= i < size:
                raise IndexError(
                    f"Index({self.key!r}, {self.index}): index {i} is out of range for "
                    f"per-sample shape {tuple(per_sample)}."
                )
        rest = [slice(None)] * (len(per_sample) - len(self.index))
        where: tuple[Any, ...] = (Ellipsis, *self.index, *rest)
        return value[where]

    def __repr__(self) -> str:
        return f"Index({self.key!r}, {_index_text(self.index)})"


class ActionLogProb(Target):
    """The log-probability of the action actually taken, under the actor's distribution.

    The action is read from the original forward (the one that acted); its log-probability is
    recomputed from the distribution parameters of the attribution pass, so the gradient says
    how each input feature moved the probability of *that* action. Works with every
    distribution of a ``ProbabilisticTensorDictModule`` (TanhNormal, Normal, Categorical,
    OneHotCategorical, MaskedCategorical, ...); per-dimension log-probabilities of factorized
    actions are summed. For a hybrid action (tensordict's ``CompositeDistribution``) it is the
    joint log-probability of every component, or one component's when ``action_key`` names it.

    Args:
        action_key: the sampled key to use when the module holds several probabilistic
            modules, or the component of a composite distribution; by default the only
            probabilistic module's action (all components of a composite one).
        index: one entry of a per-sample log-probability that has several, e.g. agent ``i``
            of a multi-agent group (TorchRL's MARL layout, ``("agents", "action")`` with the
            agents as a batch dimension of the ``"agents"`` sub-TensorDict, gives one
            log-probability per agent), or step ``t`` of whole trajectories
            (``Attributed(..., sample_dims=1)``); by default they are summed (the joint
            log-probability).

    Examples:
        >>> target = ActionLogProb()   # used as targets={"policy": ActionLogProb()}
        >>> per_agent = {f"agent {i}": ActionLogProb(index=i) for i in range(3)}
    """

    def __init__(
        self, action_key: NestedKey | None = None, *, index: int | tuple[int, ...] | None = None
    ) -> None:
        self.action_key = None if action_key is None else as_key(action_key, "action_key")
        self.index = None if index is None else _as_index(index, "ActionLogProb(index=...)")

    def bind(self, module: nn.Module) -> Target:
        candidates = [m for m in module.modules() if isinstance(m, ProbabilisticTensorDictModule)]
        if self.action_key is not None:
            candidates = [m for m in candidates if self.action_key in list(m.dist_sample_keys)]
        if not candidates:
            from torchrl.modules.tensordict_module.actors import QValueModule

            where = "" if self.action_key is None else f" sampling {self.action_key!r}"
            instead = "a key or Index(key, i)"
            if any(isinstance(m, QValueModule) for m in module.modules()):
                instead = "ActionValue() (the Q-value of the taken action)"
            raise ValueError(
                f"ActionLogProb needs a probabilistic actor{where} inside the module "
                "(a ProbabilisticActor or ProbabilisticTensorDictModule); none was found. "
                f"Explain a deterministic output with {instead} instead."
            )
        if len(candidates) > 1:
            keys = [list(m.dist_sample_keys) for m in candidates]
            raise ValueError(
                f"ActionLogProb found {len(candidates)} probabilistic modules sampling {keys}; "
                "choose one with ActionLogProb(action_key=...)."
            )
        return _BoundActionLogProb(candidates[0], self.action_key, self.index)

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        raise RuntimeError("ActionLogProb must be bound to a module first (Attributed does this).")

    def __repr__(self) -> str:
        return _log_prob_repr(self.action_key, self.index)


def _log_prob_repr(action_key: NestedKey | None, index: tuple[int, ...] | None) -> str:
    args = [] if action_key is None else [repr(action_key)]
    if index is not None:
        args.append(f"index={_index_text(index)}")
    return f"ActionLogProb({', '.join(args)})"


class _BoundActionLogProb(Target):
    def __init__(
        self,
        prob_module: ProbabilisticTensorDictModule,
        action_key: NestedKey | None,
        index: tuple[int, ...] | None = None,
    ):
        self.prob_module = prob_module
        self.sample_keys = list(prob_module.dist_sample_keys)
        # a composite distribution (several sampled keys: a hybrid action) gives the joint
        # log-probability, or one component's when action_key names it
        self.composite = len(self.sample_keys) > 1
        self.component = action_key if self.composite else None
        self.action_key = action_key if action_key is not None else self.sample_keys[0]
        self.index = index
        self.reference_keys = tuple(self.sample_keys) if self.composite else (self.action_key,)

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        dist = self.prob_module.get_dist(output)
        if self.composite:
            parts = self._composite_parts(dist, output, reference)
        else:
            log_prob = dist.log_prob(_read(reference, self.action_key, repr(self)))
            if isinstance(log_prob, TensorDictBase):
                raise TypeError(
                    f"{self!r}: the distribution gave a TensorDict of log-probabilities for one "
                    "sampled key; use a callable target that reads the one you want."
                )
            parts = [log_prob]
        total = self._per_sample(parts[0], output.batch_dims)
        for part in parts[1:]:
            total = total + self._per_sample(part, output.batch_dims)
        return total

    def _composite_parts(
        self, dist: Any, output: TensorDictBase, reference: TensorDictBase
    ) -> list[torch.Tensor]:
        sample = TensorDict(
            {k: _read(reference, k, repr(self)) for k in self.sample_keys},
            batch_size=output.batch_size,
        )
        log_prob = dist.log_prob(sample)
        if not isinstance(log_prob, TensorDictBase):  # aggregated: the joint only
            if self.component is not None:
                raise TypeError(
                    f"{self!r}: this composite distribution sums its components' "
                    "log-probabilities; to attribute one component, build it without "
                    "aggregation (tensordict's set_composite_lp_aggregate(False))."
                )
            return [log_prob]
        if self.component is None:  # the joint: every component's log-probability
            return [v for v in log_prob.values(include_nested=True, leaves_only=True)]
        keys = dict(zip(self.sample_keys, self.prob_module.log_prob_keys, strict=False))
        return [_read(log_prob, keys[self.component], repr(self))]

    def _per_sample(self, log_prob: torch.Tensor, batch_dims: int) -> torch.Tensor:
        if self.index is not None:
            who = f"{self!r} (log-probability of {self.action_key!r})"
            log_prob = _select(log_prob, batch_dims, self.index, who)
        # factorized actions (e.g. a plain Normal over action dims): sum per-dimension terms
        while log_prob.ndim > batch_dims:
            log_prob = log_prob.sum(-1)
        return log_prob

    def __repr__(self) -> str:
        key = None if self.composite and self.component is None else self.action_key
        return _log_prob_repr(key, self.index)


class ActionValue(Target):
    """The value a value-based actor gives the action actually taken: ``action_value`` at the
    taken action (a DQN's Q(s, a) of the rollout's action).

    TorchRL's :class:`~torchrl.modules.QValueActor` also writes ``chosen_action_value``, the
    value of the *greedy* action: that is what ``"chosen_action_value"`` as a target explains,
    and it is another number where exploration (``EGreedyModule``) took another action. This
    target reads the taken action from the original forward and picks its entry of
    ``action_value`` in the attribution pass, so along an integration path the explained
    action stays the same even where the greedy one changes.

    Args:
        value_key: the per-action values, ``[*batch, n_actions]``; by default the
            ``action_value`` key of the module's only ``QValueModule``, else
            ``"action_value"``.
        action_key: the taken action, one-hot ``[*batch, n_actions]`` or an index
            ``[*batch]``; by default the QValueModule's action key, else ``"action"``.
        index: the step (or other inner position) to read when each sample holds several,
            e.g. step ``t`` of whole trajectories (``Attributed(..., sample_dims=1)``):
            ``action_value[..., t, :]`` at ``action[..., t]``.

    Examples:
        >>> import tdhook_rl as thr
        >>> from tensordict import TensorDict
        >>> from torchrl.data import OneHot
        >>> from torchrl.modules import MLP, QValueActor
        >>> actor = QValueActor(MLP(in_features=3, out_features=4, num_cells=[16]),
        ...                     in_keys=["observation"], spec=OneHot(4))
        >>> explained = thr.Attributed(actor, "saliency", inputs=["observation"],
        ...                            targets={"q": ActionValue()})
        >>> td = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> td["attribution", "q", "observation"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        value_key: NestedKey | None = None,
        action_key: NestedKey | None = None,
        *,
        index: int | tuple[int, ...] | None = None,
    ) -> None:
        self.value_key = None if value_key is None else as_key(value_key, "value_key")
        self.action_key = None if action_key is None else as_key(action_key, "action_key")
        self.index = None if index is None else _as_index(index, "ActionValue(index=...)")

    def bind(self, module: nn.Module) -> Target:
        from torchrl.modules.tensordict_module.actors import QValueModule

        q_modules = [m for m in module.modules() if isinstance(m, QValueModule)]
        value_key, action_key = self.value_key, self.action_key
        if len(q_modules) == 1:
            q = q_modules[0]
            value_key = value_key if value_key is not None else q.action_value_key
            action_key = action_key if action_key is not None else q.out_keys[0]
        bound = ActionValue(
            "action_value" if value_key is None else value_key,
            "action" if action_key is None else action_key,
            index=self.index,
        )
        bound.reference_keys = (bound.action_key,)
        return bound

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        if not self.reference_keys:
            raise RuntimeError(
                "ActionValue must be bound to a module first (Attributed does this)."
            )
        who = repr(self)
        values = _read(output, self.value_key, who)
        action = _read(reference, self.action_key, who)
        batch = output.batch_size
        if self.index is not None:  # one step of each sample, e.g. of a whole trajectory
            values = _select(values, len(batch), self.index, f"{who} ({self.value_key!r})")
            action = _select(action, len(batch), self.index, f"{who} ({self.action_key!r})")
        if values.ndim != len(batch) + 1 or values.shape[:-1] != batch:
            raise ValueError(
                f"{who} needs {self.value_key!r} to hold one value per action, "
                f"[*batch, n_actions]; got shape {tuple(values.shape)} for batch {tuple(batch)}."
            )
        if action.shape == values.shape:  # one-hot
            one_hot = action.to(values.dtype)
            if not bool((one_hot.sum(-1) == 1).all()):
                raise ValueError(
                    f"{who}: {self.action_key!r} has the shape of {self.value_key!r} but is not "
                    "one-hot (exactly one 1 per sample); multi-discrete actions are not supported."
                )
            return (values * one_hot).sum(-1)
        if action.shape in (batch, (*batch, 1)) and not action.is_floating_point():
            index = action.reshape(*batch, 1).long()
            n = values.shape[-1]
            if bool(((index < 0) | (index >= n)).any()):
                raise IndexError(f"{who}: an action index is outside [0, {n}).")
            return values.gather(-1, index).squeeze(-1)
        raise ValueError(
            f"{who}: {self.action_key!r} has shape {tuple(action.shape)} and dtype "
            f"{action.dtype}; expected a one-hot {tuple(values.shape)} or integer indices "
            f"{tuple(batch)}."
        )

    def __repr__(self) -> str:
        args = [] if self.value_key is None else [repr(self.value_key), repr(self.action_key)]
        if self.index is not None:
            args.append(f"index={_index_text(self.index)}")
        return f"ActionValue({', '.join(args)})"


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
        return self.fn(output)

    def __repr__(self) -> str:
        return f"FromCallable({getattr(self.fn, '__name__', repr(self.fn))})"


def as_target(spec: Any) -> Target:
    """Turns a target spec (key, :class:`Target`, callable) into a :class:`Target`."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str | tuple):
        return Key(spec)
    if callable(spec):
        return FromCallable(spec)
    raise TypeError(
        "a target must be a key, Index(key, i), ActionLogProb(), ActionValue() or a callable "
        f"td -> Tensor; got {spec!r}"
    )


def as_targets(targets: Mapping[str, Any] | Any) -> dict[str, Target]:
    """Normalizes ``targets``: a mapping ``name -> spec``, or a single spec named ``"target"``."""
    if not isinstance(targets, Mapping):
        targets = {"target": targets}
    if not targets:
        raise ValueError("targets is empty: give at least one, e.g. {'value': 'state_value'}")
    out: dict[str, Target] = {}
    for name, spec in targets.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"target names must be non-empty strings, got {name!r}")
        out[name] = as_target(spec)
    return out
