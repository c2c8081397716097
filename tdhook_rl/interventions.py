"""Interventions on activations, for :class:`~tdhook_rl.Intervened`.

This is the one public home of the intervention names (``thr.interventions.Ablate``, ...);
they are defined in :mod:`tdhook_rl.latent.interventions`.
"""

from tdhook_rl.latent.interventions import (
    Ablate,
    Clamp,
    FromCallable,
    Intervention,
    Patch,
    Steer,
    as_intervention,
    steering_vector,
)

__all__ = [
    "Ablate",
    "Clamp",
    "FromCallable",
    "Intervention",
    "Patch",
    "Steer",
    "as_intervention",
    "steering_vector",
]
