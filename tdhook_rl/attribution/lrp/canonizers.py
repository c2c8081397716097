"""Canonizers: rewrites of a network into a form LRP's rules apply to, without touching it.

zennit's canonizers edit the model's parameters in place and undo the edit afterwards. Here a
canonizer only *describes* the rewrite: :meth:`Canonizer.fuse` returns :class:`Fusion` s,
stretches of consecutive modules that LRP treats as one merged layer. During a pass the
stretch's output is tied (by the merged layer's rule) to the stretch's input, and the merged
layer is a fresh module built from the current parameters, so the user's module is never
modified: bit-for-bit the same afterwards, and safe while another thread runs it.

:class:`MergeBatchNorm` merges each ``BatchNorm1d/2d/3d`` into the ``Linear``/``Conv``
right before it (dropout layers in eval mode in between are skipped, as in TorchRL's
``MLP``: ``Linear, Dropout, BatchNorm, activation``). The merge uses the running statistics,
so a batch norm in training mode is refused when it runs.

What the other TorchRL and shipped-agent networks contain is covered without canonizers:
TorchRL's ``MLP`` and ``ConvNet`` are sequences of ``Linear``/``Conv`` layers, activation
*modules* (passed through), ``Dropout``, ``SquashDims``/``Flatten`` (gradient: linear
reshapes), normalisation layers (``LayerNorm``: :class:`~.rules.LayerNormRule`; batch norm:
merged here). The Breakout, Connect Four and double-pendulum agents call ``torch.relu``
functionally and reshape between modules: the gradient of ReLU is the pass-through rule's
relevance wherever relevance can be non-zero, and reshapes are linear.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Canonizer", "Fusion", "MergeBatchNorm", "leaves"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MERGEABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


@dataclass
class Fusion:
    """Consecutive modules treated as one layer by LRP.

    Attributes:
        first: path of the module whose input is the merged layer's input.
        last: path of the module whose output is the merged layer's output.
        inner: paths of every module of the stretch (``first`` and ``last`` included): none
            of them gets a rule of its own.
        merged: the merged layer (a new module; its rule is the composite's rule for
            ``first``, looked up by that path and by the merged layer's type).
        check: modules that must be in eval mode when the stretch runs.
    """

    first: str
    last: str
    inner: list[str]
    merged: nn.Module
    check: list[nn.Module] = field(default_factory=list)


class Canonizer:
    """Describes merged layers of a network (see the module docstring)."""

    def fuse(self, root: nn.Module) -> list[Fusion]:
        """The stretches of ``root`` (paths as ``root.named_modules()`` spells them)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def leaves(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The modules of ``root`` without children, depth first, in registration order."""
    for name, module in root.named_modules():
        if next(module.children(), None) is None:
            yield name, module


class MergeBatchNorm(Canonizer):
    """Merges each batch norm into the linear or convolutional layer before it.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.BatchNorm1d(4), nn.Tanh())
        >>> [(f.first, f.last, type(f.merged).__name__) for f in MergeBatchNorm().fuse(net)]
        [('0', '2', 'Linear')]
    """

    def fuse(self, root: nn.Module) -> list[Fusion]:
        fusions, start = [], None  # start: (path, module) of the last mergeable layer
        between: list[tuple[str, nn.Module]] = []
        for name, module in leaves(root):
            if isinstance(module, _BATCH_NORMS) and start is not None:
                path, layer = start
                fusions.append(
                    Fusion(
                        first=path,
                        last=name,
                        inner=[path, *(n for n, _ in between), name],
                        merged=merged_batch_norm(layer, module),
                        check=[module, *(m for _, m in between)],
                    )
                )
                start, between = None, []
            elif isinstance(module, _MERGEABLE):
                start, between = (name, module), []
            elif isinstance(module, _SKIPPED) and start is not None:
                between.append((name, module))
            else:
                start, between = None, []
        return fusions


def merged_batch_norm(layer: Any, norm: Any) -> nn.Module:
    """A new layer computing ``norm(layer(x))`` with the norm's running statistics (the
    parameters are detached copies; ``layer`` and ``norm`` are untouched).

    Examples:
        >>> lin, bn = nn.Linear(3, 2), nn.BatchNorm1d(2).eval()
        >>> bn.running_mean.fill_(0.5); bn.running_var.fill_(4.0)  # doctest: +ELLIPSIS
        tensor(...
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(merged_batch_norm(lin, bn)(x), bn(lin(x)), atol=1e-6)
        True
    """
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(
            f"{type(norm).__name__} without running statistics (track_running_stats=False) "
            "cannot be merged into the layer before it; give it a rule of its own"
        )
    with torch.no_grad():
        weight = layer.weight.detach()
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(shift)
        new_weight = weight * scale.reshape(-1, *[1] * (weight.ndim - 1))
        new_bias = bias * scale + shift
    merged = _blank_like(layer)
    merged.weight = nn.Parameter(new_weight, requires_grad=False)
    merged.bias = nn.Parameter(new_bias, requires_grad=False)
    return merged


def _blank_like(layer: Any) -> nn.Module:
    """A module of ``layer``'s type and configuration, with parameters on the meta device
    (replaced by the caller), no hooks, in eval mode."""
    if isinstance(layer, nn.Linear):
        blank: nn.Module = nn.Linear(layer.in_features, layer.out_features, device="meta")
    else:
        conv = layer
        blank = type(conv)(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            padding_mode=conv.padding_mode,
            device="meta",
        )
    return blank.eval()
