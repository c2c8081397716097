"""``Intervened`` (a drop-in wrapper), ``intervene`` (a context manager) and ``get``/``set``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from tdhook_rl.core.grad_mode import inside_functional_transform
from tdhook_rl.core.hooks import temporary_hooks
from tdhook_rl.core.sites import KeySite, ModuleSite, Site, resolve_site
from tdhook_rl.core.wrapper import TransparentWrapper
from tdhook_rl.latent.interventions import Intervention, as_intervention
from tdhook_rl.latent.recorded import Recorded, SiteSpec

InterventionSpec = Intervention | Callable | torch.Tensor


def _resolve(
    module: nn.Module, interventions: Mapping[SiteSpec, InterventionSpec]
) -> list[tuple[str, Site, Intervention]]:
    if not isinstance(interventions, Mapping) or not interventions:
        raise ValueError(
            "interventions must be a non-empty mapping {site: intervention}, e.g. "
            "{'module.0.module.1': Ablate(units=[3])}"
        )
    out = []
    for spec, intervention in interventions.items():
        site = resolve_site(module, spec)
        name = site.path if isinstance(site, ModuleSite) else str(site.key)
        out.append((name, site, as_intervention(intervention)))
    return out


def _producer(module: nn.Module, site: KeySite) -> nn.Module:
    """The innermost TensorDict submodule that writes ``site.key``."""
    found = None
    for sub in module.modules():
        if sub is not module and site.key in (getattr(sub, "out_keys", None) or []):
            found = sub  # modules() is pre-order: the last match is the innermost
    if found is None:
        raise ValueError(f"no submodule writes {site.key!r}; it cannot be intervened on")
    return found


def _hooks(
    module: nn.Module, resolved: list[tuple[str, Site, Intervention]], td: TensorDictBase
) -> tuple[list, list]:
    forward_hooks, pre_hooks = [], []
    for name, site, intervention in resolved:
        if isinstance(site, KeySite):
            forward_hooks.append((_producer(module, site), _key_hook(name, site, intervention, td)))
        elif site.io == "output":
            forward_hooks.append(
                (module.get_submodule(site.path), _output_hook(name, intervention, td))
            )
        else:
            pre_hooks.append((module.get_submodule(site.path), _input_hook(name, intervention, td)))
    return forward_hooks, pre_hooks


def _output_hook(name: str, intervention: Intervention, td: TensorDictBase):
    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"site {name!r} outputs a {type(output).__name__}, not a tensor")
        return intervention(output, td, name)

    return hook


def _input_hook(name: str, intervention: Intervention, td: TensorDictBase):
    def hook(mod: nn.Module, args: tuple[Any, ...]) -> Any:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(f"site {name!r}: the first positional input is not a tensor")
        return (intervention(args[0], td, name), *args[1:])

    return hook


def _key_hook(name: str, site: KeySite, intervention: Intervention, td: TensorDictBase):
    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        output.set(site.key, intervention(output.get(site.key), td, name))
        return output

    return hook


class Intervened(TransparentWrapper):
    """Runs a TensorDict module with interventions on its activations.

    Hooks exist only during each call (removed on exit and on exceptions); the module's
    parameters and state are never changed, so the raw module behaves as before afterwards.

    Args:
        module: any TensorDict module.
        interventions: ``{site: intervention}``; sites as in :class:`~tdhook_rl.Recorded`
            (a submodule path, ``ModuleSite(path, io="input")``, or a key written inside a
            sequence); an intervention is an :mod:`~tdhook_rl.interventions` object, a callable
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
        if inside_functional_transform():
            return self.wrapped(tensordict, *args, **kwargs)
        forward_hooks, pre_hooks = _hooks(self.wrapped, self.interventions, tensordict)
        with temporary_hooks(forward_hooks, pre_hooks):
            return self.wrapped(tensordict, *args, **kwargs)

    def _extra_repr_items(self) -> dict[str, Any]:
        return {"interventions": {name: i for name, _, i in self.interventions}}


@contextmanager
def intervene(
    module: nn.Module, interventions: Mapping[SiteSpec, InterventionSpec], td: TensorDictBase
) -> Iterator[nn.Module]:
    """One-off form: the interventions are active on ``module`` inside the block.

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
    forward_hooks, pre_hooks = _hooks(module, _resolve(module, interventions), td)
    with temporary_hooks(forward_hooks, pre_hooks):
        yield module


def get(
    module: TensorDictModuleBase, td: TensorDictBase, site: SiteSpec | list[SiteSpec]
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Runs ``module`` on a copy of ``td`` and returns the activation at ``site`` (or a dict
    ``{name: activation}`` for a list of sites), detached.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> m = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh()),
        ...                      ["x"], ["y"])
        >>> get(m, TensorDict(x=torch.zeros(4, 2), batch_size=[4]), "module.0").shape
        torch.Size([4, 3])
    """
    sites = site if isinstance(site, list) else [site]
    recorded = Recorded(module, sites)
    out = recorded(td.copy())
    values = {name: out["activations", name] for name in recorded.sites}
    return values if isinstance(site, list) else next(iter(values.values()))


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
