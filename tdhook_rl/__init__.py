"""tdhook_rl: interpretability inside TorchRL.

Attribution, activation recording, probing and interventions as TensorDict modules that drop
into ``env.rollout``, collectors and trainers.

Every public name is imported on first use, so ``import tdhook_rl`` (and the ``tdhook-rl``
command's ``--help``) does not load torch.

Examples:
    >>> import tdhook_rl as thr
    >>> from tdhook_rl.attribution import IntegratedGradients
    >>> from tdhook_rl.targets import ActionLogProb
    >>> thr.Attributed.__name__, thr.probes.__name__
    ('Attributed', 'tdhook_rl.probes')
    >>> from torch import nn
    >>> thr.of_type(nn.Tanh, under="module.0").under  # every Tanh of the actor, as sites
    'module.0'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from tdhook_rl import attribution, evaluate, interventions, metrics, probes, targets
    from tdhook_rl.attributed import Attributed, attribution_disabled
    from tdhook_rl.core.sites import KeySite, ModuleSite, TypeSite, of_type
    from tdhook_rl.latent.attribution_patching import attribution_patching
    from tdhook_rl.latent.intervened import Intervened, get, intervene, set
    from tdhook_rl.latent.patching import activation_patching
    from tdhook_rl.latent.recorded import Recorded

__version__ = "0.1.0"

# public name -> the module defining it (submodules map to themselves)
_LAZY: dict[str, str] = {
    "Attributed": "tdhook_rl.attributed",
    "attribution_disabled": "tdhook_rl.attributed",
    "Intervened": "tdhook_rl.latent.intervened",
    "KeySite": "tdhook_rl.core.sites",
    "ModuleSite": "tdhook_rl.core.sites",
    "Recorded": "tdhook_rl.latent.recorded",
    "TypeSite": "tdhook_rl.core.sites",
    "of_type": "tdhook_rl.core.sites",
    "activation_patching": "tdhook_rl.latent.patching",
    "attribution_patching": "tdhook_rl.latent.attribution_patching",
    "get": "tdhook_rl.latent.intervened",
    "intervene": "tdhook_rl.latent.intervened",
    "set": "tdhook_rl.latent.intervened",
}
_SUBMODULES = ("attribution", "evaluate", "interventions", "metrics", "probes", "targets")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"tdhook_rl.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'tdhook_rl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Attributed",
    "Intervened",
    "KeySite",
    "ModuleSite",
    "Recorded",
    "TypeSite",
    "__version__",
    "activation_patching",
    "attribution",
    "attribution_disabled",
    "attribution_patching",
    "evaluate",
    "get",
    "intervene",
    "interventions",
    "metrics",
    "of_type",
    "probes",
    "set",
    "targets",
]
