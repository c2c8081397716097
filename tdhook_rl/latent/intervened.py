"""``Intervened`` (a drop-in wrapper), ``intervene`` (a context manager) and ``get``/``set``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from tdhook_rl.core.intercept import Interception, intercepting
from tdhook_rl.core.sites import KeySite, Site, SiteSpec, TypeSite, resolve_sites, site_module
from tdhook_rl.core.wrapper import TransparentWrapper
from tdhook_rl.latent.interventions import Intervention, as_intervention
from tdhook_rl.latent.recorded import Recorded

InterventionSpec = Intervention | Callable | torch.Tensor
Resolved = list[tuple[str, Site, nn.Module, Intervention]]


def _resolve(module: nn.Module, interventions: Mapping[SiteSpec, InterventionSpec]) -> Resolved:
    """``(name, site, submodule to intercept, intervention)``; a :class:`TypeSite` gives one
    entry per matching submodule, all with the same intervention."""
    if not isinstance(interventions, Mapping) or not interventions:
        raise ValueError(
            "interventions must be a non-empty mapping {site: intervention}, e.g. "
            "{'module.0.module.1': Ablate(units=[3])}"
        )
    out: Resolved = []
    for spec, intervention in interventions.items():
        action = as_intervention(intervention)
        sites = resolve_sites(module, spec)  # one site, or every match of a TypeSite
        for name, site in sites.items():
            if any(name == seen for seen, *_ in out):
                raise ValueError(f"site {name!r} is given twice (check the TypeSite selections)")
            out.append((name, site, site_module(module, site), action))
    return out


def _interceptions(resolved: Resolved, td: TensorDictBase) -> list[Interception]:
    out = []
    for name, site, target, intervention in resolved:
        if isinstance(site, KeySite):
            out.append(Interception(target, partial(_on_key, name, site.key, intervention, td)))
        else:
            fn = partial(_on_tensor, name, site.io, intervention, td)
            out.append(Interception(target, fn, site.io, element=site.element))
    return out


def _on_tensor(name: str, io: str, intervention: Intervention, td: Any, value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        what = "outputs" if io == "output" else "gets as first positional input"
        raise TypeError(f"site {name!r} {what} a {type(value).__name__}, not a tensor")
    return intervention(value, td, name)


def _on_key(name: str, key: Any, intervention: Intervention, td: Any, output: Any) -> Any:
    output.set(key, intervention(output.get(key), td, name))
    return output


class Intervened(TransparentWrapper):
    """Runs a TensorDict module with interventions on its activations.

    The interventions act only during each call and only for the calling thread (another
    thread running the same module meanwhile runs it clean); nothing is left on the module
    afterwards, exceptions included, and its parameters and state are never changed. A
    :class:`~tdhook_rl.Recorded` of an intervened site, inside or outside this wrapper,
    records the changed activation. The interventions also act when the module is called
    under ``torch.vmap`` (a value estimator, forward-mode attribution).

    Args:
        module: any TensorDict module.
        interventions: ``{site: intervention}``; sites as in :class:`~tdhook_rl.Recorded`
            (a submodule path, ``ModuleSite(path, io="input")``, a key written inside a
            sequence, or ``of_type(...)``: the intervention at every matching submodule); an
            intervention is an :mod:`~tdhook_rl.interventions` object, a callable
            ``(activation, td) -> activation`` or a tensor to patch in.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from tdhook_rl.interventions import Ablate
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> ablated = Intervened(critic, {"module.1": Ablate()})   # all hidden units to zero
        >>> out = ablated(TensorDict(observation=torch.randn(3, 4), batch_size=[3]))
        >>> torch.allclose(out["state_value"], net[2].bias.expand(3, 1))
        True
    """

    def __init__(
        self, module: TensorDictModuleBase, interventions: Mapping[SiteSpec, InterventionSpec]
    ) -> None:
        super().__init__(module)
        self.interventions = _resolve(module, interventions)
        self.in_keys = list(module.in_keys)
        self.out_keys = list(module.out_keys)

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        # no standing aside under vmap (unlike Recorded and Attributed): the interventions are
        # part of the network, also for a value estimator's vmap or forward-mode attribution
        with intercepting(_interceptions(self.interventions, tensordict)):
            return self.wrapped(tensordict, *args, **kwargs)

    def _extra_repr_items(self) -> dict[str, Any]:
        return {"interventions": {name: i for name, _, _, i in self.interventions}}


@contextmanager
def intervene(
    module: nn.Module, interventions: Mapping[SiteSpec, InterventionSpec], td: TensorDictBase
) -> Iterator[nn.Module]:
    """One-off form: the interventions are active on ``module`` inside the block, for the
    calling thread.

    ``td`` is the TensorDict the block will run (patches and callables read it).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from tdhook_rl.interventions import Clamp
        >>> m = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(2, 2)), ["x"], ["y"])
        >>> td = TensorDict(x=torch.ones(1, 2), batch_size=[1])
        >>> with intervene(m, {"module.0": Clamp(0.0, 0.0)}, td):
        ...     out = m(td)
        >>> out["y"]
        tensor([[0., 0.]], grad_fn=<ClampBackward1>)
    """
    with intercepting(_interceptions(_resolve(module, interventions), td)):
        yield module


def get(
    module: TensorDictModuleBase, td: TensorDictBase, site: SiteSpec | list[SiteSpec]
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Runs ``module`` on a copy of ``td`` and returns the activation at ``site`` (or a dict
    ``{name: activation}`` for a list of sites or a :class:`~tdhook_rl.core.sites.TypeSite`),
    detached. At an intervened site (``module`` an :class:`Intervened`) it is the activation
    after the intervention.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> m = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh()),
        ...                      ["x"], ["y"])
        >>> get(m, TensorDict(x=torch.zeros(4, 2), batch_size=[4]), "module.0").shape
        torch.Size([4, 3])
    """
    recorded = Recorded(module, site)
    out = recorded(td.copy())
    values = {name: out["activations", name] for name in recorded.sites}
    return values if isinstance(site, list | TypeSite) else next(iter(values.values()))


def set(  # mirrors get; exported as tdhook_rl.set
    module: TensorDictModuleBase,
    td: TensorDictBase,
    values: Mapping[SiteSpec, InterventionSpec],
) -> TensorDictBase:
    """Runs ``module`` on a copy of ``td`` with the activation at each site replaced (a tensor
    is patched in; any intervention works too) and returns the output TensorDict.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> m = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)),
        ...                      ["x"], ["y"])
        >>> td = TensorDict(x=torch.zeros(4, 2), batch_size=[4])
        >>> out = set(m, td, {"module.0": torch.zeros(4, 3)})
        >>> torch.allclose(out["y"], m.module[1].bias.expand(4, 1))
        True
    """
    return Intervened(module, values)(td.copy())
