"""Activations: recording them inside rollouts, probing what they encode, and intervening on
them."""

from tdhook_rl.latent import interventions, probes
from tdhook_rl.latent.intervened import Intervened, get, intervene, set
from tdhook_rl.latent.linear_probes import LogisticProbe, RidgeProbe
from tdhook_rl.latent.probes import ProbeResults, fit_probes, randomized_copy
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.latent.splits import episode_ids, episode_split, labels_from

__all__ = [
    "Intervened",
    "LogisticProbe",
    "ProbeResults",
    "Recorded",
    "RidgeProbe",
    "episode_ids",
    "episode_split",
    "fit_probes",
    "get",
    "intervene",
    "interventions",
    "labels_from",
    "probes",
    "randomized_copy",
    "set",
]
