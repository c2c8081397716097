"""Where activations live: a submodule path (as ``named_modules()`` spells it) or a TensorDict
key written inside a ``TensorDictSequential``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from tensordict import NestedKey
from torch import nn

from tdhook_rl.core.keys import as_key


@dataclass(frozen=True)
class ModuleSite:
    """The output (or the first positional input) of the submodule at ``path``.

    Examples:
        >>> ModuleSite("module.0.module.1")
        ModuleSite(path='module.0.module.1', io='output')
    """

    path: str
    io: Literal["output", "input"] = "output"

    def __post_init__(self) -> None:
        if self.io not in ("output", "input"):
            raise ValueError(f"io must be 'output' or 'input', got {self.io!r}")


@dataclass(frozen=True)
class KeySite:
    """The TensorDict entry ``key`` after the module ran (an intermediate key of a sequence).

    Examples:
        >>> KeySite("hidden")
        KeySite(key='hidden')
    """

    key: NestedKey


Site = ModuleSite | KeySite


def written_keys(module: nn.Module) -> list[NestedKey]:
    """Every key a TensorDict module or any of its TensorDict submodules writes."""
    keys: list[NestedKey] = []
    for sub in module.modules():
        for key in getattr(sub, "out_keys", None) or []:
            if key not in keys:
                keys.append(key)
    return keys


def resolve_site(module: nn.Module, spec: str | tuple | Site) -> Site:
    """Turns a site spec into a :class:`ModuleSite` or a :class:`KeySite`, checking it exists.

    A string is a module path if ``module.named_modules()`` has it, else a key the module
    writes; a tuple is a nested key.

    Raises:
        ValueError: the site does not exist; the message lists the nearest valid ones.
    """
    paths = [name for name, _ in module.named_modules() if name]
    keys = written_keys(module)
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
    key = as_key(spec, "site")
    if key in keys:
        return KeySite(key)
    raise _unknown(spec, paths, keys)


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
