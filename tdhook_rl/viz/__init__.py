"""Plots (matplotlib): attribution over time, per-feature shares by head, probe scores by
layer, intervention effects. Every function returns a ``matplotlib.figure.Figure``; save it
with ``fig.savefig(path)``.

matplotlib is imported lazily, on the first plot.
"""

from tdhook_rl.viz.attribution import attribution_over_time, feature_shares
from tdhook_rl.viz.latent import intervention_effects, probe_scores

__all__ = ["attribution_over_time", "feature_shares", "intervention_effects", "probe_scores"]
