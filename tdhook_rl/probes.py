"""Probes on recorded activations: what do an agent's hidden layers encode?

This is the one public home of the probe names (``thr.probes.fit_probes``, ...); they are
defined in :mod:`tdhook_rl.latent.probes`, :mod:`tdhook_rl.latent.linear_probes`,
:mod:`tdhook_rl.latent.splits` and :mod:`tdhook_rl.latent.multi_agent`.
"""

from tdhook_rl.latent.linear_probes import LogisticProbe, RidgeProbe
from tdhook_rl.latent.multi_agent import agents_as_copies
from tdhook_rl.latent.probes import ProbeResults, fit_probes, randomized_copy
from tdhook_rl.latent.splits import episode_ids, episode_split, labels_from

__all__ = [
    "LogisticProbe",
    "ProbeResults",
    "RidgeProbe",
    "agents_as_copies",
    "episode_ids",
    "episode_split",
    "fit_probes",
    "labels_from",
    "randomized_copy",
]
