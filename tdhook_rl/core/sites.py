"""Where activations live, and how sites are named.

A site is the output (or first input) of a submodule, named by its path as ``named_modules()``
spells it (:class:`ModuleSite`), or a TensorDict entry written inside a
``TensorDictSequential`` (:class:`KeySite`). :class:`TypeSite` selects every submodule of some
types under a path (every ``nn.Tanh`` of the actor), and :func:`resolve_sites` expands it into
module sites. Every site has one name, :func:`site_name`: ``"module.0.module.1"`` for an
output, ``"module.0.module.1:input"`` for an input, ``"a.b"`` for the key ``("a", "b")``; it is
the name ``Recorded`` writes under and the name interventions and patching report.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from tensordict import NestedKey
from torch import nn

from tdhook_rl.core.keys import as_key

__all__ = [
    "KeySite",
    "ModuleSite",
    "Site",
    "SiteSpec",
    "TypeSite",
    "of_type",
    "resolve_site",
    "resolve_sites",
    "site_name",
    "written_keys",
]

IO = Literal["output", "input"]
#: ``"path[1][0]"``: the element ``(1, 0)`` of the tuple the submodule at ``path`` gives
_ELEMENT = re.compile(r"(.+?)((?:\[-?\d+\])+)")


def _check_io(io: str) -> None:
    if io not in ("output", "input"):
        raise ValueError(f"io must be 'output' or 'input', got {io!r}")


@dataclass(frozen=True)
class ModuleSite:
    """The output (or the first positional input) of the submodule at ``path``; for a module
    that gives a tuple, ``element`` indexes into it (an ``nn.LSTM``'s ``(out, (h, c))``:
    ``(0,)`` is ``out``, ``(1, 0)`` is ``h``). As a string: ``"module.0.lstm[1][0]"``.

    Examples:
        >>> ModuleSite("module.0.module.1")
        ModuleSite(path='module.0.module.1', io='output')
        >>> site_name(ModuleSite("lstm", element=(1, 0)))
        'lstm[1][0]'
    """

    path: str
    io: IO = "output"
    element: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_io(self.io)
        if not isinstance(self.element, tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in self.element
        ):
            raise TypeError(f"element must be a tuple of ints, got {self.element!r}")

    def __repr__(self) -> str:
        element = f", element={self.element!r}" if self.element else ""
        return f"ModuleSite(path={self.path!r}, io={self.io!r}{element})"


@dataclass(frozen=True)
class KeySite:
    """The TensorDict entry ``key`` after the module ran (an intermediate key of a sequence).

    Examples:
        >>> KeySite("hidden")
        KeySite(key='hidden')
    """

    key: NestedKey


@dataclass(frozen=True)
class TypeSite:
    """Every submodule that is an instance of ``types``, at or below the path ``under``.

    :func:`resolve_sites` expands it into one :class:`ModuleSite` per match, in
    ``named_modules()`` order (zennit's layer-map composites select layers the same way).

    Examples:
        >>> TypeSite(nn.Tanh, under="module.0")
        TypeSite(types=(<class 'torch.nn.modules.activation.Tanh'>,), under='module.0', io='output')
    """

    types: type[nn.Module] | tuple[type[nn.Module], ...]
    under: str = ""
    io: IO = "output"

    def __post_init__(self) -> None:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        bad = [t for t in types if not (isinstance(t, type) and issubclass(t, nn.Module))]
        if not types or bad:
            raise TypeError(
                f"TypeSite needs nn.Module subclasses (e.g. nn.Tanh, nn.Linear), got {bad or types}"
            )
        if not isinstance(self.under, str):
            raise TypeError(f"under must be a module path string, got {self.under!r}")
        _check_io(self.io)
        object.__setattr__(self, "types", types)

    def matches(self, module: nn.Module) -> dict[str, ModuleSite]:
        """``{path: ModuleSite}`` of every matching submodule of ``module``."""
        prefix = f"{self.under}." if self.under else ""
        return {
            name: ModuleSite(name, self.io)
            for name, sub in module.named_modules()
            if name
            and (name == self.under or name.startswith(prefix))
            and isinstance(sub, self.type_tuple)
        }

    @property
    def type_tuple(self) -> tuple[type[nn.Module], ...]:
        """``types`` as a tuple (a single type is normalized to one when built)."""
        return self.types if isinstance(self.types, tuple) else (self.types,)


def of_type(*types: type[nn.Module], under: str = "", io: IO = "output") -> TypeSite:
    """Selects every submodule of the given types under ``under``: ``of_type(nn.Tanh)``.

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh())
        >>> list(resolve_sites(TensorDictModule(net, ["x"], ["y"]), of_type(nn.Tanh)))
        ['module.1', 'module.3']
    """
    return TypeSite(types, under, io)


Site: TypeAlias = ModuleSite | KeySite
SiteSpec: TypeAlias = str | tuple | ModuleSite | KeySite | TypeSite
"""What a user may write for a site: a path, a key (nested as a tuple), or a site object."""


def site_name(site: SiteSpec) -> str:
    """The one name of a site: its path (``":input"`` appended for an input), or its key
    joined by dots.

    Examples:
        >>> site_name(ModuleSite("module.1", io="input")), site_name(("agents", "hidden"))
        ('module.1:input', 'agents.hidden')
    """
    if isinstance(site, TypeSite):
        raise TypeError(f"{site!r} selects several sites; name them with resolve_sites()")
    if isinstance(site, ModuleSite):
        name = site.path + "".join(f"[{i}]" for i in site.element)
        return name if site.io == "output" else f"{name}:input"
    key = site.key if isinstance(site, KeySite) else site
    return key if isinstance(key, str) else ".".join(map(str, key))


def written_keys(module: nn.Module) -> list[NestedKey]:
    """Every key a TensorDict module or any of its TensorDict submodules writes."""
    keys: list[NestedKey] = []
    for sub in module.modules():
        for key in getattr(sub, "out_keys", None) or []:
            if key not in keys:
                keys.append(key)
    return keys


def site_module(module: nn.Module, site: Site) -> nn.Module:
    """The submodule to intercept for ``site``: the one at its path, or for a key site the
    innermost TensorDict submodule that writes the key.

    Examples:
        >>> from tensordict.nn import TensorDictModule, TensorDictSequential
        >>> inner = TensorDictModule(nn.Linear(2, 2), ["x"], ["h"])
        >>> seq = TensorDictSequential(inner, TensorDictModule(nn.Tanh(), ["h"], ["y"]))
        >>> site_module(seq, KeySite("h")) is inner
        True
    """
    if not isinstance(site, KeySite):
        return module.get_submodule(site.path)
    found = None
    for sub in module.modules():
        if sub is not module and site.key in (getattr(sub, "out_keys", None) or []):
            found = sub  # modules() is pre-order: the last match is the innermost
    if found is None:
        raise ValueError(f"no submodule writes {site.key!r}; it cannot be intercepted")
    return found


def resolve_site(module: nn.Module, spec: str | tuple | Site) -> Site:
    """Turns one site spec into a :class:`ModuleSite` or a :class:`KeySite`, checking it exists.

    A string is a module path if ``module.named_modules()`` has it, else a key the module
    writes; a tuple is a nested key.

    Raises:
        ValueError: the site does not exist; the message lists the nearest valid ones.
    """
    paths = [name for name, _ in module.named_modules() if name]
    keys = written_keys(module)
    if isinstance(spec, TypeSite):
        raise TypeError(f"{spec!r} selects several sites: resolve it with resolve_sites()")
    if isinstance(spec, ModuleSite):
        if spec.path in paths:
            return spec
        raise _unknown(spec.path, paths, keys)
    if isinstance(spec, KeySite):
        if as_key(spec.key) in keys:
            return spec
        raise _unknown(spec.key, paths, keys)
    if isinstance(spec, str) and spec in paths:
        return ModuleSite(spec)
    indexed = _ELEMENT.fullmatch(spec) if isinstance(spec, str) else None
    if indexed is not None and indexed.group(1) in paths:  # "lstm[1][0]": a tuple's element
        element = tuple(int(i) for i in re.findall(r"-?\d+", indexed.group(2)))
        return ModuleSite(indexed.group(1), element=element)
    key = as_key(spec, "site")
    if key in keys:
        return KeySite(key)
    raise _unknown(spec, paths, keys)


def resolve_sites(
    module: nn.Module, specs: SiteSpec | Sequence[SiteSpec] | Mapping[str, SiteSpec]
) -> dict[str, Site]:
    """``{name: site}`` for one spec, a list of specs or a ``{name: spec}`` mapping.

    Sites of a list are named by :func:`site_name`; a :class:`TypeSite` expands into every
    matching submodule, named by its :func:`site_name` in a list and ``"{name}/{site_name}"``
    in a mapping.

    Raises:
        ValueError: a site does not exist, a type matches nothing, or two sites share a name.

    Examples:
        >>> from tensordict.nn import TensorDictModule
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> m = TensorDictModule(net, ["x"], ["y"])
        >>> resolve_sites(m, {"act": of_type(nn.Tanh), "out": "y"})
        {'act/module.1': ModuleSite(path='module.1', io='output'), 'out': KeySite(key='y')}
    """
    named: list[tuple[str | None, SiteSpec]]
    if isinstance(specs, Mapping):
        named = list(specs.items())
    elif isinstance(specs, str | tuple | ModuleSite | KeySite | TypeSite):
        named = [(None, specs)]
    elif isinstance(specs, Sequence):
        named = [(None, spec) for spec in specs]
    else:
        raise TypeError(f"sites must be a site, a list of sites or {{name: site}}, got {specs!r}")
    out: dict[str, Site] = {}
    for name, spec in named:
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"site names must be non-empty strings, got {name!r}")
        if isinstance(spec, TypeSite):
            found = _expand(module, spec)
            items: list[tuple[str, Site]] = [(_label(name, s), s) for s in found.values()]
        else:
            site = resolve_site(module, spec)
            items = [(site_name(site) if name is None else name, site)]
        for label, site in items:
            if label in out:
                raise ValueError(f"two sites are named {label!r}; name them in a mapping")
            out[label] = site
    return out


def _label(name: str | None, site: Site) -> str:
    return site_name(site) if name is None else f"{name}/{site_name(site)}"


def _expand(module: nn.Module, spec: TypeSite) -> dict[str, ModuleSite]:
    paths = [name for name, _ in module.named_modules() if name]
    if spec.under and spec.under not in paths:
        raise _unknown(spec.under, paths, [])
    found = spec.matches(module)
    if not found:
        root = module.get_submodule(spec.under) if spec.under else module
        below = {type(sub).__name__ for sub in root.modules()}
        names = [t.__name__ for t in spec.type_tuple]
        raise ValueError(
            f"no submodule of type {names} under {spec.under or 'the module'!r}; the types "
            f"there are {sorted(below)}"
        )
    return found


def _unknown(spec: object, paths: list[str], keys: list[NestedKey]) -> ValueError:
    text = spec if isinstance(spec, str) else ".".join(spec) if isinstance(spec, tuple) else ""
    candidates = {p: p for p in paths} | {
        (k if isinstance(k, str) else ".".join(k)): k for k in keys
    }
    near = difflib.get_close_matches(text, list(candidates), n=5, cutoff=0.3)
    hint = f"nearest valid sites: {[candidates[n] for n in near]}" if near else ""
    return ValueError(
        f"site {spec!r} is neither a submodule path (named_modules()) nor a key the module "
        f"writes. {hint or f'module paths: {paths[:10]}; keys: {keys[:10]}'}"
    )
