"""Activations: recording them inside rollouts (and, in later modules, probes and
interventions)."""

from tdhook_rl.latent.recorded import Recorded

__all__ = ["Recorded"]
