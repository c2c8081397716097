"""Probes on recorded activations (``tdhook_rl.probes``; defined in
:mod:`tdhook_rl.latent.probes`, :mod:`tdhook_rl.latent.linear_probes` and
:mod:`tdhook_rl.latent.splits`)."""

from tdhook_rl.latent.linear_probes import LogisticProbe, RidgeProbe
from tdhook_rl.latent.probes import ProbeResults, fit_probes, randomized_copy
from tdhook_rl.latent.splits import episode_ids, episode_split, labels_from

__all__ = [
    "LogisticProbe",
    "ProbeResults",
    "RidgeProbe",
    "episode_ids",
    "episode_split",
    "fit_probes",
    "labels_from",
    "randomized_copy",
]
