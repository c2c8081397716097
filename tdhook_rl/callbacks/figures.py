"""The callback's figures (matplotlib, imported here only): attribution over time of the
first trajectory, feature shares by head (heads at rounding level left out), probe R^2 by
layer, spatial maps of image-like inputs, and a unit-by-step heatmap of each hidden site
attributed, saved as PNGs under ``log_dir/figures``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensordict import TensorDictBase

from tdhook_rl.callbacks.scalars import slug

if TYPE_CHECKING:
    from tdhook_rl.callbacks.evaluation import InterpretabilityCallback

__all__ = ["save_figures"]


def save_figures(callback: InterpretabilityCallback, rollout: TensorDictBase, frames: int) -> None:
    """Saves this evaluation's figures as ``<name>_<frames:09d>.png``."""
    import matplotlib.pyplot as plt

    from tdhook_rl import viz

    folder = Path(callback.log.log_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    trajectory = rollout.reshape(-1, rollout.shape[-1])[0] if rollout.batch_dims > 1 else rollout
    input_key = callback.drawn_key
    groups = callback.groups
    names: Any = callback.attribution.feature_names
    if input_key in callback.sites and names is None:
        names = groups.names if groups.kind == "feature" else None
    if groups.kind == "agents":  # one row per agent and feature, as the scalars are named
        inner = groups.inner.names if groups.inner is not None else []
        names = [f"agent{a}/{n}" for a in range(groups.shape[0]) for n in inner]
        if groups.inner is not None and groups.inner.kind != "feature":
            names = None  # grouped per agent: let the plots group the flattened input
    ranked = [h for h in callback.targets if h not in callback.rounding]
    kwargs = {"input_key": input_key, "feature_names": names}
    figures = {
        "attribution_over_time": viz.attribution_over_time(
            trajectory, title=f"attribution over time at {frames} frames", **kwargs
        )
    }
    if ranked:
        figures["feature_shares"] = viz.feature_shares(
            trajectory, ranked, title=f"feature shares at {frames} frames", **kwargs
        )
    if callback.last_probes is not None:
        figures["probe_r2"] = viz.probe_scores(
            callback.last_probes.rows,
            score="r2",
            control=None,
            title=f"held-out probe R^2 at {frames} frames",
        )
    value = trajectory.get(input_key, None)  # None for a hidden site
    if value is not None and value.ndim >= 4:  # image-like: [T, C, H, W]
        figures["attribution_maps"] = viz.attribution_maps(
            trajectory, input_key=input_key, title=f"attribution maps at {frames} frames"
        )
    for site in callback.sites:
        figures[f"units_{slug(site)}"] = viz.unit_heatmap(
            trajectory,
            site,
            ranked or None,
            order="total",
            max_units=64,
            title=f"attribution to the units of {site} at {frames} frames",
        )
    for name, fig in figures.items():
        fig.savefig(folder / f"{name}_{frames:09d}.png")
        plt.close(fig)
