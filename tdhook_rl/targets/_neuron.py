"""``Neuron``: a unit (or the sum of a layer's units) of a hidden site as a target."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import nn

from tdhook_rl.core.keys import read
from tdhook_rl.core.sites import Site, SiteSpec, resolve_sites, site_name
from tdhook_rl.targets._base import ModuleTarget, Target, as_index, index_text, select

__all__ = ["Neuron"]

#: where the engine puts the activations that Neuron targets read
NEURON_ROOT = "_neurons"


class Neuron(ModuleTarget):
    """A hidden unit as a target: what in the observation drives unit 17 of the critic's
    second layer, next to the policy and the value in the same pass (captum's
    ``NeuronIntegratedGradients`` and friends, for every unit and head at once).

    Args:
        site: a submodule path, a ``ModuleSite`` (``io="input"`` for its input) or a key a
            sub-module writes (see :func:`~tdhook_rl.core.sites.resolve_sites`).
        unit: the unit: an ``int`` into the activation's per-sample dimensions (the last one
            for a vector), or a tuple of ints (a channel and a cell of a conv layer);
            ``None`` sums every unit of the site.

    Examples:
        >>> import tdhook_rl as thr
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> explained = thr.Attributed(critic, "saliency", inputs=["observation"],
        ...     targets={"value": "state_value", "unit 2": Neuron("module.1", 2)})
        >>> td = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> td["attribution", "unit 2", "observation"].shape
        torch.Size([5, 3])
    """

    def __init__(self, site: SiteSpec, unit: int | tuple[int, ...] | None = None) -> None:
        self.site = site
        self.unit = None if unit is None else as_index(unit, "Neuron(unit=...)")

    def bind(self, module: nn.Module) -> Target:
        sites = resolve_sites(module, self.site)
        if len(sites) != 1:
            raise ValueError(
                f"Neuron({self.site!r}) names {len(sites)} sites ({list(sites)}); give one"
            )
        ((name, site),) = sites.items()
        return _BoundNeuron(name, site, self.unit)

    def __repr__(self) -> str:
        unit = "" if self.unit is None else f", {index_text(self.unit)}"
        return f"Neuron({self.site!r}{unit})"


class _BoundNeuron(Target):
    """Reads the site's activation, which the engine records during its passes."""

    def __init__(self, name: str, site: Site, unit: tuple[int, ...] | None) -> None:
        self.observed_name = name
        self.observed_site = site
        self.observed_key = (NEURON_ROOT, name)
        self.unit = unit

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        value = read(output, self.observed_key, self.who)
        if self.unit is None:
            return value.reshape(*value.shape[: output.batch_dims], -1).sum(-1)
        units = tuple(value.shape[output.batch_dims :])
        if len(units) < len(self.unit) or not all(
            -n <= i < n for i, n in zip(self.unit, units, strict=False)
        ):
            raise IndexError(
                f"{self.who}: unit {index_text(self.unit)} is out of range for hidden site "
                f"{self.observed_name!r}, whose activation has per-sample shape {units}; give "
                "a unit inside it (one int per dimension, from the first)"
            )
        return select(value, output.batch_dims, self.unit, self.who, self.observed_key)

    def __repr__(self) -> str:
        unit = "" if self.unit is None else f", {index_text(self.unit)}"
        return f"Neuron({site_name(self.observed_site)!r}{unit})"
