"""Plots (matplotlib): attribution over time, per-feature shares by head, spatial maps of
image-like inputs, memory maps of recurrent policies, probe scores by layer, intervention
effects, board heatmaps (chess, Connect Four) and unit-by-step heatmaps of hidden sites.
Every plotting function returns a ``matplotlib.figure.Figure`` (or, for one board on a
given axes, the image); save a figure with ``fig.savefig(path)``.

matplotlib is imported lazily, on the first plot.
"""

from tdhook_rl.viz.attribution import (
    attribution_maps,
    attribution_over_time,
    feature_shares,
    memory_map,
)
from tdhook_rl.viz.chess_board import board_heatmap, chess_heatmaps, chess_square_map
from tdhook_rl.viz.connect_four_board import connect_four_heatmap, connect_four_heatmaps
from tdhook_rl.viz.latent import intervention_effects, probe_scores
from tdhook_rl.viz.patching import atp_vs_exact
from tdhook_rl.viz.sae_examples import draw_pendulum, pendulum_states, sae_examples
from tdhook_rl.viz.units import unit_heatmap

__all__ = [
    "atp_vs_exact",
    "attribution_maps",
    "attribution_over_time",
    "board_heatmap",
    "chess_heatmaps",
    "chess_square_map",
    "connect_four_heatmap",
    "connect_four_heatmaps",
    "draw_pendulum",
    "feature_shares",
    "intervention_effects",
    "memory_map",
    "pendulum_states",
    "probe_scores",
    "sae_examples",
    "unit_heatmap",
]
