"""Hidden sites as attribution inputs: the activation a submodule outputs (or receives, or a
key a sub-module writes), replaced by the engine's values during its passes.

``Attributed(..., inputs=["observation", "module.0.module.1"])`` attributes every target to
the observation *and* to that layer's units: the engine runs the module with the site's
activation replaced by the values it differentiates (or perturbs), through the one
interception mechanism of :mod:`tdhook_rl.core.intercept`. Per method this gives captum's
layer methods: ``Saliency`` the gradient at the activation (``LayerGradient``),
``InputXGradient`` activation x gradient (``LayerGradientXActivation``),
``IntegratedGradients`` the path from the site's activation under the baseline *input* to its
actual activation (``LayerIntegratedGradients``), perturbation methods the activation's
units replaced by their baseline activation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from tdhook_rl.attribution.baselines import resolve_baseline
from tdhook_rl.core.intercept import Interception, intercepting
from tdhook_rl.core.keys import as_key
from tdhook_rl.core.sites import KeySite, ModuleSite, Site, resolve_sites, site_module
from tdhook_rl.core.vmap import is_vmapped, transform_depth

__all__ = ["HiddenSite", "hidden_site", "replacing", "site_baselines", "split_inputs"]

#: where the activations of hidden sites under the baseline input are kept in the context
BASELINE_ROOT = "_hidden_site_baseline"


@dataclass(frozen=True, eq=False)
class HiddenSite:
    """A hidden site used as an attribution input (a key of the engine's values).

    Attributes:
        name: the site's name (:func:`~tdhook_rl.core.sites.site_name`); results are written
            under ``(out_key, target, name)``.
        site: the resolved site.
        module: the submodule intercepted (for a key site, the one that writes the key).
    """

    name: str
    site: Site
    module: nn.Module = field(repr=False)

    @property
    def io(self) -> Literal["output", "input"]:
        return "output" if isinstance(self.site, KeySite) else self.site.io

    @property
    def baseline_key(self) -> tuple[str, str]:
        """The context entry holding this site's activation under the baseline input."""
        return (BASELINE_ROOT, self.name)

    def read(self, value: Any) -> torch.Tensor:
        """The activation in what the intercepted module returns (or receives)."""
        if isinstance(self.site, KeySite):
            value = value.get(self.site.key)
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"hidden site {self.name!r} gives a {type(value).__name__}, not a tensor; "
                "attribute to a submodule that outputs one tensor (or a key it writes)"
            )
        if not value.is_floating_point():
            raise TypeError(
                f"hidden site {self.name!r} gives a {value.dtype} tensor; attribution needs a "
                "floating-point activation: attribute to a site before it is cast or "
                "discretized (e.g. the layer before an argmax or a comparison)"
            )
        return value

    def interception(self, fn: Any, observe: bool = False) -> Interception:
        element = self.site.element if isinstance(self.site, ModuleSite) else ()
        return Interception(
            self.module, partial(_through, self, fn), self.io, observe, element=element
        )

    def __hash__(self) -> int:
        return hash((HiddenSite, self.name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HiddenSite) and other.name == self.name


def hidden_site(module: nn.Module, name: str, site: Site) -> HiddenSite:
    """The :class:`HiddenSite` of ``site`` (resolved in ``module``), named ``name``."""
    return HiddenSite(name, site, site_module(module, site))


def _through(site: HiddenSite, fn: Any, value: Any) -> Any:
    """Applies ``fn`` to the activation inside what the intercepted module gives."""
    new = fn(site.read(value))
    if new is None or not isinstance(site.site, KeySite):
        return new
    value.set(site.site.key, new)
    return value


def replacing(site: HiddenSite, values: torch.Tensor) -> Interception:
    """The site's activation replaced by ``values`` (same shape), for one engine pass."""

    def replace(activation: torch.Tensor) -> torch.Tensor:
        if activation.shape != values.shape:
            raise ValueError(
                f"hidden site {site.name!r} gives shape {tuple(activation.shape)} in the "
                f"attribution pass, but its values have shape {tuple(values.shape)}: a site "
                "must keep the batch as its leading dimensions (record one before the batch "
                "is reshaped)"
            )
        return values

    return site.interception(replace)


def captured(sites: list[HiddenSite], store: dict[str, torch.Tensor]) -> list[Interception]:
    """Observers keeping each site's first activation of a call in ``store``. A site seen
    under more functorch transforms than the observers were made under runs inside a vmap
    of the module's own (the engine's forward-mode passes make theirs around it): refused,
    as :func:`checked_activation` refuses it in the module's own call."""
    depth = transform_depth()

    def keep(name: str, value: torch.Tensor) -> None:
        if transform_depth() > depth:
            raise ValueError(_inside_vmap(name))
        store.setdefault(name, value)

    return [s.interception(partial(keep, s.name), observe=True) for s in sites]


def checked_activation(
    site: HiddenSite, value: torch.Tensor | None, batch: torch.Size, own_call: bool = True
) -> torch.Tensor:
    """The activation recorded in a call: produced, with the batch leading; in the module's
    own call (``own_call``) not a slice seen inside a ``torch.vmap`` of the module (the
    engine's forward-mode passes run under their own vmap, where every tensor is one)."""
    if value is None:
        raise RuntimeError(
            f"hidden site {site.name!r} was not reached in the module's forward pass; "
            "attribute to a site the module runs"
        )
    if own_call and is_vmapped(value):
        raise ValueError(_inside_vmap(site.name))
    if value.shape[: len(batch)] != batch:
        raise ValueError(
            f"hidden site {site.name!r} gives shape {tuple(value.shape)}, whose leading "
            f"dimensions are not the batch {tuple(batch)}; attribute to a site before the "
            "batch is reshaped"
        )
    return value


def _inside_vmap(name: str) -> str:
    return (
        f"hidden site {name!r} runs inside torch.vmap (e.g. the per-agent networks of "
        "MultiAgentMLP(share_params=False)), where a hook sees one slice; attribute to a "
        "site outside it"
    )


_NO_BASELINE = object()


def baseline_of(method: Any) -> Any:
    """The method's baseline (a wrapped method's, for SmoothGrad), or ``_NO_BASELINE``."""
    while method is not None:
        if hasattr(method, "baseline"):
            return method.baseline
        method = getattr(method, "method", None)
    return _NO_BASELINE


def site_baselines(
    module: TensorDictModuleBase, sites: list[HiddenSite], method: Any, source: TensorDictBase
) -> dict[HiddenSite, torch.Tensor]:
    """Each site's activation with the module's floating-point inputs at the method's
    baseline (captum's layer methods), from one grad-free pass; ``{}`` for a method without
    a baseline."""
    baseline = baseline_of(method)
    if baseline is _NO_BASELINE:
        return {}
    inputs = source.select(*module.in_keys, strict=False).detach().clone()
    for key in module.in_keys:
        value = inputs.get(key, None)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            inputs.set(key, resolve_baseline(baseline, key, value, source))
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad(), intercepting(captured(sites, seen)):
        module(inputs)
    return {
        s: checked_activation(s, seen.get(s.name), source.batch_size).detach().clone()
        for s in sites
    }


def split_inputs(
    module: nn.Module, specs: list[Any], module_in: list[NestedKey]
) -> tuple[list[NestedKey], list[HiddenSite]]:
    """Entries the module reads (input keys) and hidden sites (submodule paths, written keys,
    ``ModuleSite`` / ``KeySite`` / ``TypeSite``), in order."""
    keys: list[NestedKey] = []
    hidden: list[HiddenSite] = []
    for spec in specs:
        if isinstance(spec, str | tuple):
            key = as_key(spec, "input key")
            if key in module_in:
                keys.append(key)
                continue
        try:
            sites = resolve_sites(module, spec)
        except (ValueError, TypeError):
            raise ValueError(
                f"input {spec!r} is neither an entry the module reads (its in_keys are "
                f"{module_in}) nor a hidden site (a submodule path as named_modules() spells "
                "it, a key a sub-module writes, or thr.of_type(...)); attribute to one of those."
            ) from None
        for name, site in sites.items():
            if isinstance(site, KeySite) and site.key in module_in:
                keys.append(site.key)
            else:
                hidden.append(hidden_site(module, name, site))
    if not keys and not hidden:
        raise ValueError("inputs is empty: name the entries to attribute, e.g. ['observation']")
    return keys, hidden
