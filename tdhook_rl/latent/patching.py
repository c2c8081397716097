"""Activation patching between a clean and a corrupted input, site by site, head by head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type
from torch import nn

from tdhook_rl.core.intercept import Interception, intercepting
from tdhook_rl.core.sites import SiteSpec, resolve_sites
from tdhook_rl.latent.intervened import Intervened
from tdhook_rl.latent.interventions import Patch
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.targets import Target, as_targets, per_sample


@dataclass
class PatchingResult:
    """How much of each head's clean-vs-corrupted change each site restores.

    Attributes:
        sites: the patched sites, in order.
        heads: the head (target) names.
        restored: ``[n_sites, n_heads]``: ``(mean patched - mean corrupted) / (mean clean -
            mean corrupted)``; 1 means the site alone carries the whole change of that head,
            0 that patching it does nothing. NaN where the clean and corrupted means agree.
        clean, corrupted: per-sample head values ``[n_heads, *batch]``.
        patched: per-sample head values ``[n_sites, n_heads, *batch]``.
    """

    sites: list[str]
    heads: list[str]
    restored: torch.Tensor
    clean: torch.Tensor
    corrupted: torch.Tensor
    patched: torch.Tensor
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        width = max(len(s) for s in self.sites)
        lines = [f"{'site':<{width}}  " + "  ".join(f"{h:>10}" for h in self.heads)]
        for i, site in enumerate(self.sites):
            cells = "  ".join(f"{float(v):>10.3f}" for v in self.restored[i])
            lines.append(f"{site:<{width}}  {cells}")
        return "\n".join(lines)


def default_sites(module: nn.Module, td: TensorDictBase | None = None) -> list[str]:
    """Every leaf submodule that is not itself a TensorDict module, in forward order; with
    ``td``, only those that output one floating-point tensor when the module runs on it (a
    state-independent scale such as TorchRL's ``AddStateIndependentNormalScale`` returns a
    tuple: there is no single activation to patch), and that run at all.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> class Pair(nn.Module):  # outputs a tuple, as a state-independent scale does
        ...     def forward(self, x):
        ...         return x, x.abs()
        >>> net = TensorDictModule(nn.Sequential(nn.Linear(3, 4), Pair()),
        ...                        ["observation"], ["loc", "scale"])
        >>> default_sites(net)
        ['module.0', 'module.1']
        >>> default_sites(net, TensorDict(observation=torch.zeros(2, 3), batch_size=[2]))
        ['module.0']
    """
    leaves = [
        (name, sub)
        for name, sub in module.named_modules()
        if name and not list(sub.children()) and not isinstance(sub, TensorDictModuleBase)
    ]
    if td is None:
        return [name for name, _ in leaves]
    seen: dict[str, bool] = {}

    def watch(name: str) -> Any:
        def observe(value: Any) -> None:
            ok = isinstance(value, torch.Tensor) and value.is_floating_point()
            seen[name] = seen.get(name, True) and ok

        return observe

    watched = [Interception(sub, watch(name), observe=True) for name, sub in leaves]
    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        with intercepting(watched):
            module(td.copy())
    return [name for name, _ in leaves if seen.get(name, False)]


def _heads(
    targets: Mapping[str, Target], out: TensorDictBase, reference: TensorDictBase
) -> torch.Tensor:
    """``(n_heads, *batch)``: each head's value, one scalar per sample."""
    return torch.stack(
        [per_sample(t(out, reference), out.batch_size, t).detach() for t in targets.values()]
    )


@torch.no_grad()
def activation_patching(
    module: TensorDictModuleBase,
    clean: TensorDictBase,
    corrupted: TensorDictBase,
    heads: Mapping[str, Any],
    sites: Sequence[SiteSpec] | None = None,
) -> PatchingResult:
    """Patches each site's clean activation into the corrupted run and measures each head.

    The clean run's own outputs serve as reference (e.g. the clean action for
    :class:`~tdhook_rl.targets.ActionLogProb`); runs are deterministic (distribution modes).

    Args:
        module: the actor-critic (any TensorDict module).
        clean, corrupted: two TensorDicts with the same batch shape (e.g. an observation and
            a perturbed copy).
        heads: ``{name: target}`` as in :class:`~tdhook_rl.Attributed` (``"state_value"``,
            ``ActionLogProb()``, ``("logits", i)`` or ``Index("logits", i)``, a callable).
        sites: sites to patch (default: :func:`default_sites`); ``of_type(nn.Tanh)`` in the list
            patches every submodule of that type, one at a time.

    Returns:
        A :class:`PatchingResult`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> clean = TensorDict(observation=torch.ones(8, 3), batch_size=[8])
        >>> result = activation_patching(critic, clean, clean.apply(torch.neg),
        ...                              heads={"value": "state_value"})
        >>> result.restored[:, 0]   # every layer on the path carries the whole change
        tensor([1., 1., 1.])
    """
    if clean.batch_size != corrupted.batch_size:
        raise ValueError(
            f"clean and corrupted batches differ: {tuple(clean.batch_size)} vs "
            f"{tuple(corrupted.batch_size)}; patching matches samples by batch index"
        )
    targets = as_targets(heads, module, kind="head")
    names = list(sites) if sites is not None else default_sites(module, clean)
    named = resolve_sites(module, names)  # {site_name: site}; a TypeSite gives every match
    labels, resolved = list(named), list(named.values())
    with set_interaction_type(InteractionType.DETERMINISTIC):
        recorded = Recorded(module, dict(zip(labels, resolved, strict=True)))(clean.copy())
        reference = recorded
        clean_heads = _heads(targets, recorded, reference)
        corrupt_out = module(corrupted.copy())
        corrupt_heads = _heads(targets, corrupt_out, reference)
        patched = []
        for label, site in zip(labels, resolved, strict=True):
            patch = Patch(recorded, key=("activations", label))
            out = Intervened(module, {site: patch})(corrupted.copy())
            patched.append(_heads(targets, out, reference))
    patched_t = torch.stack(patched)  # (n_sites, n_heads, *batch)
    n = len(targets)  # means over the batch ((): one sample; mean(()) would reduce all)
    c, k = clean_heads.reshape(n, -1).mean(1), corrupt_heads.reshape(n, -1).mean(1)
    p = patched_t.reshape(len(labels), n, -1).mean(-1)
    gap = c - k
    restored = (p - k) / torch.where(gap == 0, torch.nan, gap)
    rows = [
        {"site": label, "head": head, "restored": float(restored[i, j])}
        for i, label in enumerate(labels)
        for j, head in enumerate(targets)
    ]
    return PatchingResult(
        labels, list(targets), restored, clean_heads, corrupt_heads, patched_t, rows
    )
