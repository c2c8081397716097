"""Interventions on activations (``tdhook_rl.interventions``; defined in
:mod:`tdhook_rl.latent.interventions`)."""

from tdhook_rl.latent import interventions as _interventions
from tdhook_rl.latent.interventions import *  # noqa: F403 - this module re-exports them
from tdhook_rl.latent.interventions import as_intervention

__all__ = [*_interventions.__all__, "as_intervention"]
