"""Probes on recorded activations (``tdhook_rl.probes``; defined in
:mod:`tdhook_rl.latent.probes`, :mod:`tdhook_rl.latent.linear_probes` and
:mod:`tdhook_rl.latent.splits`)."""

from tdhook_rl.latent import probes as _probes
from tdhook_rl.latent.probes import *  # noqa: F403 - this module re-exports them

__all__ = list(_probes.__all__)
