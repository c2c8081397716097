"""Model-randomization sanity checks (Adebayo et al. 2018, "Sanity checks for saliency
maps"): re-initialize the network's layers, cascading from the output or one at a time, and
measure how much each head's attribution map still resembles the original (Spearman's rank
correlation per sample). A map that barely changes does not depend on what was learned."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDictBase
from torch import nn

from tdhook_rl.attributed import Attributed
from tdhook_rl.latent.probes import randomized_copy
from tdhook_rl.metrics._common import prepare


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dimension, tied values sharing their average rank.

    Examples:
        >>> average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))
        tensor([[3.5000, 1.0000, 3.5000, 2.0000]])
    """
    ordered = x.sort(-1).values.contiguous()
    lower = torch.searchsorted(ordered, x.contiguous(), side="left")
    upper = torch.searchsorted(ordered, x.contiguous(), side="right")
    return (lower + upper + 1).to(x.dtype) / 2  # ranks lower+1 .. upper, averaged


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation along the last dimension, batched over the others (ties
    averaged); NaN where either side is constant.

    Examples:
        >>> spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 20.0, 20.0, 40.0]))
        tensor(0.9487)
    """
    if x.shape != y.shape:
        raise ValueError(f"spearman needs two tensors of one shape, got {x.shape} and {y.shape}")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    denominator = (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()
    numerator = (rx * ry).sum(-1)
    nan = torch.full_like(numerator, float("nan"))
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-30), nan)


@dataclass
class RandomizationResult:
    """Rank correlations between the original and the randomized networks' attributions.

    Attributes:
        mode: ``"cascading"`` (step i re-initializes ``layers[:i + 1]``) or ``"independent"``
            (step i re-initializes ``layers[i]`` alone).
        layers: module paths (``named_modules()`` of the wrapped module), output end first.
        correlation: per head, Spearman's correlation per step and sample, ``(L, *batch)``.
        absolute: whether ``|attribution|`` was ranked.
        perturbation: the randomization model, in words, with its seed.
    """

    mode: Literal["cascading", "independent"]
    layers: list[str]
    correlation: dict[str, torch.Tensor]
    absolute: bool
    perturbation: str

    def mean(self) -> dict[str, torch.Tensor]:
        """Per head, the correlation of each step averaged over samples (NaN-aware), ``(L,)``."""
        return {h: c.reshape(c.shape[0], -1).nanmean(1) for h, c in self.correlation.items()}


def randomizable_layers(module: nn.Module) -> list[str]:
    """Paths of the submodules that own parameters and have ``reset_parameters``, output end
    first (the reverse of ``named_modules()`` order).

    Examples:
        >>> randomizable_layers(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
        ['2', '0']
    """
    paths = [
        name
        for name, sub in module.named_modules()
        if callable(getattr(sub, "reset_parameters", None))
        and any(True for _ in sub.parameters(recurse=False))
    ]
    return paths[::-1]


def randomization_check(
    explained: Attributed,
    td: TensorDictBase,
    *,
    mode: Literal["cascading", "independent"] = "cascading",
    layers: Sequence[str] | None = None,
    heads: Sequence[str] | str | None = None,
    absolute: bool = True,
    seed: int = 0,
) -> RandomizationResult:
    """Adebayo et al.'s model-randomization test for every measured head.

    A layer's randomized weights are those of :func:`tdhook_rl.probes.randomized_copy`
    (``seed``): one draw for the whole network, so cascading step i and independent step i
    use the same new weights for a layer. The explained method runs once per step on a
    private copy of the wrapper, for all heads and samples in one pass (the taken actions of
    ``td`` stay the targets' references); the wrapped module is never changed.

    Args:
        explained: the :class:`~tdhook_rl.Attributed` wrapper that wrote the attributions.
        td: its output, with the inputs, attributions and the entries the targets read.
        mode: ``"cascading"`` (from the output layer down) or ``"independent"``.
        layers: module paths to randomize, output end first (default:
            :func:`randomizable_layers` of the wrapped module).
        heads: the target names to measure (default: all).
        absolute: rank ``|attribution|`` (the usual choice for saliency maps).
        seed: seeds the re-initialization.

    Returns:
        A :class:`RandomizationResult`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> mlp = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
        >>> explained = thr.Attributed(TensorDictModule(mlp, ["observation"], ["state_value"]),
        ...                            "saliency", inputs=["observation"],
        ...                            targets={"value": "state_value"})
        >>> td = explained(TensorDict(observation=torch.randn(6, 5), batch_size=[6]))
        >>> result = randomization_check(explained, td)
        >>> result.layers, result.correlation["value"].shape
        (['module.2', 'module.0'], torch.Size([2, 6]))
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    available = randomizable_layers(explained.wrapped)
    if layers is None:
        layers = available
    layers = list(layers)
    if not layers:
        raise ValueError("no layer to randomize: the module has no submodule with parameters")
    for path in layers:
        if path not in available:
            raise KeyError(
                f"layer {path!r} cannot be randomized: it is not a submodule with parameters "
                f"and reset_parameters (those are {available})"
            )
    private = copy.deepcopy(explained)  # its targets and engine follow the copied module
    setting = prepare(private, td, heads)  # the original attributions, read from td
    originals = _parameters(private.wrapped, layers, clone=True)
    with warnings.catch_warnings():  # parameters outside ``layers`` are never read here
        warnings.filterwarnings("ignore", "randomized_copy: no reset_parameters", UserWarning)
        drawn = _parameters(randomized_copy(explained.wrapped, seed), layers, clone=False)
    mine = _parameters(private.wrapped, layers, clone=False)
    original = torch.stack([setting.attributions[h] for h in setting.heads])  # (H, *b, F)
    rows = []
    with torch.no_grad():
        for i, path in enumerate(layers):
            randomized = layers[: i + 1] if mode == "cascading" else [path]
            for layer in layers:
                source = drawn if layer in randomized else originals
                for target, value in zip(mine[layer], source[layer], strict=True):
                    target.copy_(value)
            moved = setting.attribute(setting.x)  # (H, *batch, F)
            a, b = (original.abs(), moved.abs()) if absolute else (original, moved)
            rows.append(spearman(a, b))
    correlation = torch.stack(rows, 1)  # (H, L, *batch)
    return RandomizationResult(
        mode=mode,
        layers=layers,
        correlation={h: correlation[i] for i, h in enumerate(setting.heads)},
        absolute=absolute,
        perturbation=(
            f"{mode} re-initialization (reset_parameters) of {len(layers)} layers, output "
            f"end first, seed={seed}; Spearman over {setting.n_features} features per sample"
        ),
    )


def _parameters(module: nn.Module, layers: list[str], clone: bool) -> dict[str, list]:
    modules = dict(module.named_modules())
    return {
        path: [p.detach().clone() if clone else p for p in modules[path].parameters(recurse=False)]
        for path in layers
    }
