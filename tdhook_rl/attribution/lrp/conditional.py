"""Concept relevance (CRP, Achtibat et al. 2023, "From attribution maps to human-understandable
explanations through Concept Relevance Propagation"): LRP conditioned on hidden channels.

``R(x | c)`` is the relevance at the input when, at a site layer, the relevance of every
channel but those in ``c`` is zeroed before it is passed further down. A channel is an index
along ``dim`` of the site's output (``1``: the channels of a convolution's ``(N, C, H, W)``
output or the units of a ``Linear``'s ``(N, F)``; the engine calls the network on one flat
batch dimension). The mask is applied inside the site's own rule, on the relevance of its
output, so every target of every head is still explained by one forward and one batched
backward; several sites can be conditioned at once (the channels of each kept).

Concept selection (:func:`channel_relevance`, :func:`top_channels`): which channels of a site
carry the most relevance for a head, the relevance at the site (``Attributed(..., LRP(...),
inputs=[site])``) summed per channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from tdhook_rl.attribution.lrp.composites import Composite, EpsilonPlus, Plan
from tdhook_rl.attribution.lrp.method import LRP
from tdhook_rl.attribution.lrp.rules import Gradient, Rule

__all__ = ["ConditionalLRP", "Conditioned", "channel_relevance", "top_channels"]


class Conditioned(Rule):
    """``rule`` with the relevance of its first output kept only on ``channels`` along
    ``dim``.

    Examples:
        >>> from tdhook_rl.attribution.lrp import Epsilon
        >>> lin = nn.Linear(3, 4, bias=False)
        >>> x = torch.ones(1, 3)
        >>> r = Conditioned(Epsilon(0.0), [2]).relevance(lin, [x], [lin(x)], [lin(x).detach()])
        >>> torch.allclose(r[0].sum(), lin(x)[0, 2])   # only unit 2's relevance goes down
        True
    """

    def __init__(self, rule: Rule, channels: Sequence[int], dim: int = 1) -> None:
        if isinstance(rule, Gradient):
            raise TypeError("Conditioned needs a relevance rule, not Gradient()")
        self.rule, self.channels, self.dim = rule, [int(c) for c in channels], dim

    def relevance(self, module, inputs, outputs, relevance_out):
        out = outputs[0]
        dim = self.dim % out.ndim
        size = out.shape[dim]
        bad = [c for c in self.channels if not -size <= c < size]
        if bad:
            raise ValueError(
                f"CRP condition: channels {bad} do not exist in the output of "
                f"{type(module).__name__} (shape {tuple(out.shape)}, {size} channels along dim "
                f"{self.dim}); pick channels in [0, {size})"
            )
        mask = torch.zeros(size, dtype=out.dtype, device=out.device)
        mask[self.channels] = 1.0
        mask = mask.reshape(size, *[1] * (out.ndim - dim - 1))  # broadcasts from the right
        masked = [relevance_out[0] * mask, *relevance_out[1:]]
        return self.rule.relevance(module, inputs, outputs, masked)

    def __repr__(self) -> str:
        return f"Conditioned({self.rule!r}, channels={self.channels}, dim={self.dim})"


class _ConditionedComposite(Composite):
    """``composite``'s plan with the rule of each condition site wrapped by
    :class:`Conditioned`."""

    def __init__(self, composite: Composite, condition: dict[str, list[int]], dim: int) -> None:
        super().__init__(composite.rules, composite.canonizers, composite.defaults)
        self.inner, self.condition, self.dim = composite, condition, dim

    def plan(self, root: nn.Module) -> Plan:
        plan = self.inner.plan(root)
        modules = dict(root.named_modules())
        missing = [site for site in self.condition if site not in modules]
        if missing:
            raise ValueError(
                f"CRP condition names {missing}, not submodules of {type(root).__name__}; "
                "use paths as named_modules() spells them"
            )
        todo = dict(self.condition)
        rules = []
        for path, module, rule in plan.rules:
            if path in todo and not isinstance(rule, Gradient):
                rule = Conditioned(rule, todo.pop(path), self.dim)
            rules.append((path, module, rule))
        fusions = []
        for fusion, rule in plan.fusions:
            if fusion.last in todo:  # a merged layer (conv + batch norm): its output
                rule = Conditioned(rule, todo.pop(fusion.last), self.dim)
            fusions.append((fusion, rule))
        if todo:
            raise ValueError(
                f"CRP condition sites {sorted(todo)} have no LRP rule of their own (a container, "
                "a layer that keeps its gradient, or one merged into the next); condition on a "
                "layer the composite gives a rule, e.g. a Linear, a Conv or an activation"
            )
        return Plan(rules, fusions)

    def __repr__(self) -> str:
        return f"{self.inner!r} conditioned on {self.condition}"


class ConditionalLRP(LRP):
    """LRP conditioned on channels of hidden sites (CRP): relevance reaches the inputs only
    through the chosen channels.

    Args:
        composite: the rules (default :class:`~.composites.EpsilonPlus`).
        condition: ``{site path: [channels]}`` (paths as ``named_modules()`` of the attributed
            module spells them); each site must be a module with a rule.
        dim: the channel dimension of the sites' outputs (``1``: ``(N, C, ...)``).
        check_graph: as in :class:`~.method.LRP`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> from tdhook_rl.attribution.lrp import Composite, Epsilon
        >>> net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 1, bias=False))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> composite = Composite({nn.Linear: Epsilon(1e-9)})
        >>> td = TensorDict(observation=torch.randn(3), batch_size=[])
        >>> def relevance(method, at):
        ...     out = thr.Attributed(critic, method, inputs=[at], targets={"v": "state_value"})(td)
        ...     return out["attribution", "v", at]
        >>> r_site = relevance(LRP(composite), "module.0")   # the relevance of each unit
        >>> crp = ConditionalLRP(composite, {"module.0": [1, 3]})
        >>> r_x = relevance(crp, "observation")             # through units 1 and 3 only
        >>> torch.allclose(r_x.sum(), r_site[[1, 3]].sum(), atol=1e-5)
        True
    """

    def __init__(
        self,
        composite: Composite | None = None,
        condition: Mapping[str, Sequence[int]] | None = None,
        dim: int = 1,
        check_graph: bool = True,
    ) -> None:
        if not condition:
            raise ValueError(
                "ConditionalLRP needs a condition, e.g. {'module.0.module.conv': [3, 7]} "
                "(site path -> channels); use LRP for unconditioned relevance"
            )
        normalized = {}
        for site, channels in condition.items():
            if not isinstance(site, str):
                raise TypeError(f"condition keys are module paths (str), got {site!r}")
            if isinstance(channels, int) or not len(channels):
                raise ValueError(
                    f"condition[{site!r}] must be a non-empty list of channel indices, "
                    f"got {channels!r}"
                )
            normalized[site] = [int(c) for c in channels]
        base = composite if composite is not None else EpsilonPlus()
        if not isinstance(base, Composite):
            raise TypeError(f"composite must be a Composite (e.g. EpsilonPlus()), got {base!r}")
        super().__init__(_ConditionedComposite(base, normalized, dim), check_graph)
        self.condition, self.dim = normalized, dim

    def __repr__(self) -> str:
        return f"ConditionalLRP(composite={self.composite.inner!r}, condition={self.condition})"  # type: ignore[attr-defined]


def channel_relevance(relevance: Tensor, batch_dims: int, dim: int = 0) -> Tensor:
    """``[channels]``: the relevance at a site summed over the batch and every unit dimension
    but the channel's.

    Args:
        relevance: the relevance at the site, ``(*batch, *unit_shape)`` (as ``Attributed``
            writes it under ``("attribution", head, site)``).
        batch_dims: how many leading dimensions are the batch.
        dim: the channel dimension within ``unit_shape`` (``0``: ``(C, H, W)`` or ``(F,)``).

    Examples:
        >>> channel_relevance(torch.ones(5, 3, 2, 2), batch_dims=1)
        tensor([20., 20., 20.])
    """
    if relevance.ndim <= batch_dims:
        raise ValueError(
            f"relevance of shape {tuple(relevance.shape)} has no unit dimension after "
            f"{batch_dims} batch dimension(s)"
        )
    moved = relevance.movedim(batch_dims + dim, 0)  # (C, ...)
    return moved.reshape(moved.shape[0], -1).sum(-1)


def top_channels(
    relevance: Tensor, k: int, batch_dims: int, dim: int = 0, absolute: bool = False
) -> Tensor:
    """The ``k`` channels of a site with the largest summed relevance (concept selection),
    most relevant first; ``absolute`` ranks by ``|sum|`` (channels against the decision too).

    Examples:
        >>> r = torch.tensor([[[0.1, 0.2], [3.0, 1.0], [-5.0, 0.0]]])   # (batch 1, C=3, 2)
        >>> top_channels(r, 2, batch_dims=1).tolist(), top_channels(r, 1, 1, absolute=True).tolist()
        ([1, 0], [2])
    """
    per_channel = channel_relevance(relevance, batch_dims, dim)
    if not 0 < k <= per_channel.numel():
        raise ValueError(f"k must be in [1, {per_channel.numel()}] (the channels), got {k}")
    score = per_channel.abs() if absolute else per_channel
    return score.topk(k).indices
