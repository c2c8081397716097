"""tdhook_rl: interpretability inside TorchRL.

Attribution, activation recording, probing and interventions as TensorDict modules that drop
into ``env.rollout``, collectors and trainers.

Examples:
    >>> import tdhook_rl as thr
    >>> from tdhook_rl.attribution import IntegratedGradients
    >>> from tdhook_rl.targets import ActionLogProb
"""

import importlib
from typing import Any

from tdhook_rl import attribution, interventions, probes, targets
from tdhook_rl.attributed import Attributed
from tdhook_rl.core.sites import KeySite, ModuleSite
from tdhook_rl.latent.intervened import Intervened, get, intervene, set
from tdhook_rl.latent.patching import activation_patching
from tdhook_rl.latent.recorded import Recorded

__version__ = "0.1.0"

# imported on first use: tdhook_rl.evaluate needs torchrl.envs (about 0.4 s, MuJoCo included)
_LAZY_MODULES = ("evaluate",)


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"tdhook_rl.{name}")
    raise AttributeError(f"module 'tdhook_rl' has no attribute {name!r}")


__all__ = [
    "Attributed",
    "Intervened",
    "KeySite",
    "ModuleSite",
    "Recorded",
    "__version__",
    "activation_patching",
    "attribution",
    "evaluate",
    "get",
    "intervene",
    "interventions",
    "probes",
    "set",
    "targets",
]
