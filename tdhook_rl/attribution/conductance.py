"""Conductance (Dhamdhere et al., 2018): integrated gradients through a hidden unit, every
target from one batched pass (captum's ``LayerConductance``)."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from torch import nn

from tdhook_rl.attribution._perturb import check_chunk_size
from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.baselines import (
    Baselines,
    baseline_keys,
    normalize_baselines,
    resolve_baseline,
)
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.hidden import HiddenSite, captured, checked_activation
from tdhook_rl.attribution.quadrature import quadrature
from tdhook_rl.core.intercept import intercepting

__all__ = ["Conductance"]


class Conductance(AttributionMethod):
    """How much of each target flows through each unit of a hidden site along the *input*
    path: ``sum_k d target / d a (x_k) * (a(x_{k+1}) - a(x_k))``, with ``x_k = b + alpha_k (x
    - b)`` the path from the baseline input ``b`` to the input ``x`` and ``a`` the site's
    activation; captum's ``LayerConductance``, with its ``n_steps + 1`` path points and its
    difference of activations between consecutive points.

    Unlike layer integrated gradients (``IntegratedGradients`` at a site, whose path runs from
    the site's activation under the baseline to its actual activation), the path here is the
    input's; a layer that every path from the input to the target passes through conducts
    the whole change, so the conductances of its units sum to ``f(x) - f(b)`` up to the
    quadrature error (and up to ``f`` at the first and last path points: the default
    Gauss-Legendre points do not reach 0 and 1; ``rule="riemann_trapezoid"`` does).

    The path runs over every floating-point entry the module reads (as the site baselines of
    :mod:`tdhook_rl.attribution.hidden` do); other entries (an action mask) are held fixed.
    One grad-free pass records the sites' activations at every path point, then one batched
    pass per site gives every target's gradient there for every path point (or
    ``ceil(n_steps / chunk_size)`` of them); several sites of one path are each attributed
    as if alone (each unit's conductance is captum's for that layer). Results are written
    under the site's name with the activation's shape. Only hidden sites can be attributed
    (conductance at an input is integrated gradients); a site that is not between the input
    and a target is an error.

    Args:
        n_steps: number of path steps (>= 2); ``n_steps + 1`` points are evaluated.
        rule: where the points lie, by captum's names (see
            :func:`~tdhook_rl.attribution.quadrature`); the weights are not used.
        baseline: the baseline of the module's inputs, as for
            :class:`~tdhook_rl.attribution.IntegratedGradients`.
        chunk_size: at most this many path points per gradient pass; ``None`` for all.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
        ...                        torch.nn.Linear(8, 1)), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, Conductance(n_steps=400, rule="riemann_trapezoid"),
        ...                            inputs=["module.1"], targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> td["attribution", "value", "module.1"].shape
        torch.Size([5, 8])
        >>> change = net(td.clone())["state_value"] - net(td.clone().zero_())["state_value"]
        >>> total = td["attribution", "value", "module.1"].sum(-1, keepdim=True)
        >>> bool((total - change).abs().max() < 1e-3)
        True
    """

    def __init__(
        self,
        n_steps: int = 50,
        rule: str = "gausslegendre",
        baseline: Baselines = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        quadrature(rule, n_steps)  # validates rule and n_steps
        self.alphas = quadrature(rule, n_steps + 1)[0]  # captum's n_steps + 1 points
        self.n_steps = n_steps
        self.rule = rule
        self.baseline = normalize_baselines(baseline)
        self.chunk_size = check_chunk_size(chunk_size)
        self.context_keys = baseline_keys(self.baseline)
        # per module: the (site names, target names) already found between input and target
        self._between: weakref.WeakKeyDictionary[nn.Module, set[tuple[Any, ...]]] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_between"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._between = weakref.WeakKeyDictionary()

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        plain = [k for k in inputs if not isinstance(k, HiddenSite)]
        if plain:
            raise ValueError(
                f"Conductance attributes to hidden sites, and {plain[0]!r} is an entry the "
                "module reads (conductance at an input is integrated gradients): attribute "
                "it with IntegratedGradients, or list only hidden sites in inputs"
            )
        sites = [k for k in inputs if isinstance(k, HiddenSite)]
        starts = self._module_inputs(engine)
        self._check_between(engine, sites, starts)
        like = next(iter(starts.values()))
        alphas = torch.tensor(self.alphas, dtype=like.dtype, device=like.device)  # (n + 1,)
        ends = {k: resolve_baseline(self.baseline, k, x, engine.context) for k, x in starts.items()}
        # (*batch, *f) -> (n + 1, *batch, *f): the input path from the baseline
        path = {
            k: ends[k] + alphas.view(-1, *[1] * x.ndim) * (x - ends[k]) for k, x in starts.items()
        }
        acts = self._activations(engine, sites, path)  # site -> (n + 1, *batch, *f)
        chunk = self.chunk_size or self.n_steps
        total: dict[NestedKey, torch.Tensor] = {}
        for start in range(0, self.n_steps, chunk):
            stop = min(start + chunk, self.n_steps)
            shape = (stop - start, *engine.batch_shape)
            context = engine.context.expand(*shape).clone()
            for key, p in path.items():
                context.set(key, p[start:stop])
            stepped = engine.at(context, engine.reference.expand(*shape))
            # one pass per site: replacing two sites of one path at once would cut the
            # upstream one's path through the other
            for s in sites:
                grad = stepped.gradients({s: acts[s][start:stop]})[s]  # (n_t, c, *batch, *f)
                steps = acts[s][start + 1 : stop + 1] - acts[s][start:stop]  # (c, *batch, *f)
                part = (grad * steps).sum(1)  # (n_t, *batch, *f)
                total[s] = part if s not in total else total[s] + part
        return AttributionResult(total)

    @staticmethod
    def _module_inputs(engine: GradientEngine) -> dict[NestedKey, torch.Tensor]:
        """The floating-point entries the module reads: the path runs over them."""
        starts = {}
        for key in engine.module.in_keys:
            x = engine.context.get(key, None)
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                starts[key] = x
        if not starts:
            raise ValueError(
                f"Conductance runs a path over the module's floating-point inputs, and none of "
                f"its in_keys {list(engine.module.in_keys)} holds one"
            )
        return starts

    @staticmethod
    def _activations(
        engine: GradientEngine, sites: list[HiddenSite], path: dict[NestedKey, torch.Tensor]
    ) -> dict[HiddenSite, torch.Tensor]:
        """Each site's activation at every path point, from one grad-free pass."""
        lead = next(iter(path.values())).shape[:1]
        shape = torch.Size((*lead, *engine.batch_shape))
        seen: dict[str, torch.Tensor] = {}
        with torch.no_grad(), intercepting(captured(sites, seen)):
            engine.evaluate(path, tuple(lead))
        flat = torch.Size((shape.numel(),))  # the engine runs the module on one flat batch
        acts = {}
        for s in sites:
            value = checked_activation(s, seen.get(s.name), flat)
            acts[s] = value.reshape(*shape, *value.shape[1:])
        return acts

    def _check_between(
        self,
        engine: GradientEngine,
        sites: list[HiddenSite],
        starts: dict[NestedKey, torch.Tensor],
    ) -> None:
        """Every site depends on the inputs and every target on every site (checked once
        per module, sites and targets, on one sample: the graph's structure, not values)."""
        slot = (tuple(s.name for s in sites), tuple(engine.targets))
        done = self._between.setdefault(engine.module, set())
        if slot in done or engine.batch_shape.numel() == 0:
            return
        one = engine.at(_first(engine.context), _first(engine.reference))
        with torch.enable_grad():
            leaves = {k: one.context.get(k).detach().requires_grad_() for k in starts}
            seen: dict[str, torch.Tensor] = {}
            with intercepting(captured(sites, seen)):
                one.evaluate(leaves, ())
            for s in sites:
                a = checked_activation(s, seen.get(s.name), torch.Size((1,)))
                used = a.requires_grad and any(
                    g is not None
                    for g in torch.autograd.grad(
                        a.sum(), list(leaves.values()), allow_unused=True, retain_graph=True
                    )
                )
                if not used:
                    raise ValueError(
                        f"Conductance: hidden site {s.name!r} does not depend on the module's "
                        f"inputs {list(starts)}, so no path from the baseline passes through "
                        "it; attribute to a site between the input and the target"
                    )
            for name, target in engine.targets.items():
                alone = copy.copy(one)
                alone.targets = {name: target}
                for s in sites:  # each site alone, as in the gradient passes
                    leaf = seen[s.name].detach().requires_grad_()
                    out = alone.evaluate({s: leaf}, ())  # (1, 1)
                    used = out.requires_grad and (
                        torch.autograd.grad(out.sum(), leaf, allow_unused=True)[0] is not None
                    )
                    if not used:
                        raise ValueError(
                            f"Conductance: target {name!r} does not depend on hidden site "
                            f"{s.name!r} (the site is not between the input and the target); "
                            "attribute that target to a site on its path, or in another "
                            "Attributed"
                        )
        done.add(slot)

    def __repr__(self) -> str:
        return (
            f"Conductance(n_steps={self.n_steps}, rule={self.rule!r}, "
            f"baseline={self.baseline!r}, chunk_size={self.chunk_size})"
        )


def _first(td: TensorDictBase) -> TensorDictBase:
    """The first sample of ``td``, with a batch of one: ``(*batch, ...) -> (1, ...)``."""
    return td.reshape(-1)[:1]
