"""tdhook_rl: interpretability inside TorchRL.

Attribution, activation recording, probing and interventions as TensorDict modules that drop
into ``env.rollout``, collectors and trainers.

Examples:
    >>> import tdhook_rl as thr
    >>> from tdhook_rl.attribution import IntegratedGradients
    >>> from tdhook_rl.targets import ActionLogProb
"""

from tdhook_rl import attribution, evaluate, interventions, probes, targets
from tdhook_rl.attributed import Attributed
from tdhook_rl.core.sites import KeySite, ModuleSite
from tdhook_rl.latent.intervened import Intervened, get, intervene, set
from tdhook_rl.latent.patching import activation_patching
from tdhook_rl.latent.recorded import Recorded

__version__ = "0.1.0"

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
