"""Targets read from a probabilistic actor: the log-probability of the taken action
(:class:`ActionLogProb`) and the location of the action distribution (:class:`ActionLoc`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictModule
from torch import nn

from tdhook_rl.core.keys import as_key, read
from tdhook_rl.targets._base import ModuleTarget, Target, as_index, index_text, select


def probabilistic_module(
    module: nn.Module, action_key: NestedKey | None, who: str
) -> ProbabilisticTensorDictModule:
    """The only ``ProbabilisticTensorDictModule`` of ``module`` (sampling ``action_key`` when
    given), or a ``ValueError`` saying what to use instead."""
    candidates = [m for m in module.modules() if isinstance(m, ProbabilisticTensorDictModule)]
    if action_key is not None:
        candidates = [m for m in candidates if action_key in list(m.dist_sample_keys)]
    if not candidates:
        from torchrl.modules.tensordict_module.actors import QValueModule

        where = "" if action_key is None else f" sampling {action_key!r}"
        instead = "a key or Index(key, i)"
        if any(isinstance(m, QValueModule) for m in module.modules()):
            instead = "ActionValue() (the Q-value of the taken action)"
        raise ValueError(
            f"{who} needs a probabilistic actor{where} inside the module "
            "(a ProbabilisticActor or ProbabilisticTensorDictModule); none was found. "
            f"Explain a deterministic output with {instead} instead."
        )
    if len(candidates) > 1:
        keys = [list(m.dist_sample_keys) for m in candidates]
        raise ValueError(
            f"{who} found {len(candidates)} probabilistic modules sampling {keys}; "
            f"choose one with {who}(action_key=...)."
        )
    return candidates[0]


def _repr(name: str, key: NestedKey | None, index: tuple[int, ...] | None) -> str:
    args = [] if key is None else [repr(key)]
    if index is not None:
        args.append(f"index={index_text(index)}")
    return f"{name}({', '.join(args)})"


class ActionLogProb(ModuleTarget):
    """The log-probability of the action actually taken, under the actor's distribution.

    The action is read from the original forward (the one that acted); its log-probability is
    recomputed from the distribution parameters of the attribution pass, so the gradient says
    how each input feature moved the probability of *that* action. Works with every
    distribution of a ``ProbabilisticTensorDictModule`` (TanhNormal, Normal, Categorical,
    OneHotCategorical, MaskedCategorical, ...); per-dimension log-probabilities of factorized
    actions are summed. For a hybrid action (tensordict's ``CompositeDistribution``) it is the
    joint log-probability of every component, or one component's when ``action_key`` names it.

    With deterministic actions (the distribution's mode) and a state-independent scale, this
    gradient is zero up to rounding: explain :class:`ActionLoc` there instead.

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
        self.index = None if index is None else as_index(index, "ActionLogProb(index=...)")

    def bind(self, module: nn.Module) -> Target:
        prob = probabilistic_module(module, self.action_key, "ActionLogProb")
        return _BoundActionLogProb(prob, self.action_key, self.index)

    def __repr__(self) -> str:
        return _repr("ActionLogProb", self.action_key, self.index)


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
            log_prob = dist.log_prob(read(reference, self.action_key, self.who))
            if isinstance(log_prob, TensorDictBase):
                raise TypeError(
                    f"{self.who}: the distribution gave a TensorDict of log-probabilities for "
                    "one sampled key; use a callable target that reads the one you want."
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
            {k: read(reference, k, self.who) for k in self.sample_keys},
            batch_size=output.batch_size,
        )
        log_prob = dist.log_prob(sample)
        if not isinstance(log_prob, TensorDictBase):  # aggregated: the joint only
            if self.component is not None:
                raise TypeError(
                    f"{self.who}: this composite distribution sums its components' "
                    "log-probabilities; to attribute one component, build it without "
                    "aggregation (tensordict's set_composite_lp_aggregate(False))."
                )
            return [log_prob]
        if self.component is None:  # the joint: every component's log-probability
            return [v for v in log_prob.values(include_nested=True, leaves_only=True)]
        keys = dict(zip(self.sample_keys, self.prob_module.log_prob_keys, strict=False))
        return [read(log_prob, keys[self.component], self.who)]

    def _per_sample(self, log_prob: torch.Tensor, batch_dims: int) -> torch.Tensor:
        if self.index is not None:
            who = f"{self.who} (log-probability of {self.action_key!r})"
            log_prob = select(log_prob, batch_dims, self.index, who)
        # factorized actions (e.g. a plain Normal over action dims): sum per-dimension terms
        while log_prob.ndim > batch_dims:
            log_prob = log_prob.sum(-1)
        return log_prob

    def __repr__(self) -> str:
        key = None if self.composite and self.component is None else self.action_key
        return _repr("ActionLogProb", key, self.index)


class ActionLoc(ModuleTarget):
    """The location of the action distribution: the ``loc`` entry the actor's network writes
    (TorchRL's ``ProbabilisticActor`` over ``NormalParamExtractor``'s ``loc`` / ``scale``).

    This is the target for deterministic continuous policies: where rollouts take the mode,
    the gradient of the mode's log-probability is zero up to rounding for a state-independent
    scale, while the location is what the observation moves. It is the ``loc`` *key*, not the
    distribution's mode: for ``TanhNormal`` that is the pre-tanh location; the executed mode
    action is ``tanh`` of it rescaled to the action bounds, a monotone per-dimension map, so
    at any point the gradients of the two differ by one positive factor per sample (same
    signs, same saliency shares), and the loc's are not flattened where ``tanh`` saturates.
    (Path methods such as IG integrate that factor along the path, so there the two differ
    slightly; explain the mode itself with a callable target if that is what you want.)

    One scalar per sample: the location has one entry per action dimension (per agent in
    TorchRL's MARL layout), so with more than one, ``index`` picks one: ``ActionLoc(index=i)``
    for action dimension ``i``, ``ActionLoc(index=(agent, i))`` for a multi-agent loc. A
    one-dimensional action (the double pendulum's force) needs none.

    Args:
        loc_key: the location entry; by default the input of the actor's distribution for
            its ``loc`` parameter (found on the module's only probabilistic module).
        index: the entry of the per-sample location to explain (required when it has more
            than one).

    Examples:
        >>> import tdhook_rl as thr
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import NormalParamExtractor, TensorDictModule
        >>> from torchrl.modules import ProbabilisticActor, TanhNormal
        >>> net = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(3, 2),
        ...     NormalParamExtractor()), ["observation"], ["loc", "scale"])
        >>> actor = ProbabilisticActor(net, ["loc", "scale"], distribution_class=TanhNormal)
        >>> explained = thr.Attributed(actor, "saliency", inputs=["observation"],
        ...                            targets={"force": ActionLoc()})
        >>> td = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> td["attribution", "force", "observation"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self, loc_key: NestedKey | None = None, *, index: int | tuple[int, ...] | None = None
    ) -> None:
        self.loc_key = None if loc_key is None else as_key(loc_key, "loc_key")
        self.index = None if index is None else as_index(index, "ActionLoc(index=...)")

    def bind(self, module: nn.Module) -> Target:
        loc_key = self.loc_key
        if loc_key is None:
            prob = probabilistic_module(module, None, "ActionLoc")
            params = dict(zip(prob.dist_keys, prob.in_keys, strict=False))
            locs = [key for name, key in params.items() if _last(name) == "loc"]
            if len(locs) != 1:
                raise ValueError(
                    f"ActionLoc looks for the distribution's 'loc' parameter and found "
                    f"{len(locs)} among {list(params)}; name it with ActionLoc(loc_key=...)."
                )
            loc_key = as_key(locs[0], "loc_key")
        return _BoundActionLoc(loc_key, self.index)

    def __repr__(self) -> str:
        return _repr("ActionLoc", self.loc_key, self.index)


def _last(key: NestedKey) -> str:
    return key if isinstance(key, str) else key[-1]


class _BoundActionLoc(Target):
    def __init__(self, loc_key: NestedKey, index: tuple[int, ...] | None) -> None:
        self.loc_key = loc_key
        self.index = index

    @property
    def column(self) -> tuple[NestedKey, int] | None:
        return (self.loc_key, self.index[0]) if self.index and len(self.index) == 1 else None

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        loc = read(output, self.loc_key, self.who)
        batch_dims = output.batch_dims
        if self.index is not None:
            loc = select(loc, batch_dims, self.index, self.who)
        per_step = tuple(loc.shape[batch_dims:])
        if math.prod(per_step) != 1:
            at = "" if self.index is None else f" at index {index_text(self.index)}"
            raise ValueError(
                f"{self.who}: the location {self.loc_key!r} has per-sample shape {per_step}"
                f"{at}, not one scalar; explain one action dimension with ActionLoc(index=i) "
                "(index=(agent, i) for a multi-agent location)."
            )
        return loc.reshape(output.batch_size)

    def __repr__(self) -> str:
        return _repr("ActionLoc", self.loc_key, self.index)
