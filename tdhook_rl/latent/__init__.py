"""Activations: recording them inside rollouts (and, in later modules, probes and
interventions)."""

from tdhook_rl.latent import interventions
from tdhook_rl.latent.intervened import Intervened, get, intervene, set
from tdhook_rl.latent.recorded import Recorded

__all__ = ["Intervened", "Recorded", "get", "intervene", "interventions", "set"]
