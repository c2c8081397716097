"""Interventions on activations (``tdhook_rl.interventions``; defined in
:mod:`tdhook_rl.latent.interventions`)."""

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
