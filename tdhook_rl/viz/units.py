"""Unit-by-step heatmaps: the attribution of each hidden unit of a site over one trajectory,
one panel per head (``Attributed(..., inputs=["module.0.module.1"])`` writes them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.core.keys import key_tuple
from tdhook_rl.viz._mpl import pyplot

__all__ = ["ORDERS", "unit_heatmap", "unit_matrix"]

#: how the units (rows) are ordered: by index, or by total |attribution| (largest first)
ORDERS = ("index", "total")
#: at most this many unit labels on the y axis (every k-th unit otherwise)
MAX_LABELS = 32


def unit_matrix(
    rollout: TensorDictBase,
    site: str,
    head: str,
    *,
    out_key: NestedKey = "attribution",
) -> torch.Tensor:
    """The attribution of each unit of ``site`` for ``head`` along a trajectory, ``[units,
    T]``: the per-step activation flattened (a conv site ``[C, H, W]`` summed over its
    spatial positions: one row per channel).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({("attribution", "v", "h"): torch.arange(6.0).reshape(3, 2)}, [3])
        >>> unit_matrix(td, "h", "v").tolist()
        [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    """
    if rollout.batch_dims != 1:
        raise ValueError(
            f"unit_heatmap plots one trajectory [T]; got batch {tuple(rollout.batch_size)} "
            "(select one env copy first, e.g. rollout[0])"
        )
    root = key_tuple(out_key)
    key = (*root, head, site)
    if key not in rollout.keys(True):
        heads = list(rollout.get(out_key).keys()) if out_key in rollout.keys() else []
        where = [h for h in heads if (*root, h, site) in rollout.keys(True)]
        raise KeyError(
            f"no attribution {key!r}: heads under {out_key!r}: {heads}; heads with site "
            f"{site!r}: {where}. Attribute to the site with Attributed(..., inputs=[{site!r}])"
        )
    a = rollout.get(key).detach().float().cpu()  # (T, *units)
    if a.ndim == 4:  # a conv site (T, C, H, W): one row per channel
        a = a.sum((-2, -1))
    return a.reshape(a.shape[0], -1).T  # (units, T)


def _order(matrix: torch.Tensor, order: str | Sequence[int], max_units: int | None) -> list[int]:
    units = matrix.shape[0]
    if isinstance(order, str):
        if order not in ORDERS:
            raise ValueError(
                f"order must be one of {list(ORDERS)} or a list of units, got {order!r}"
            )
        rows = list(range(units))
        if order == "total" or max_units is not None:  # largest total |attribution| first
            rows = matrix.abs().sum(1).argsort(descending=True, stable=True).tolist()
    else:
        rows = [int(u) for u in order]
        if not rows or len(set(rows)) != len(rows) or not all(0 <= u < units for u in rows):
            raise ValueError(
                f"order lists units {rows}; give distinct unit indices in [0, {units})"
            )
    if max_units is not None:
        rows = rows[:max_units]
    return rows


def unit_heatmap(
    rollout: TensorDictBase,
    site: str,
    heads: Sequence[str] | None = None,
    *,
    order: str | Sequence[int] = "index",
    max_units: int | None = None,
    shared_scale: bool = False,
    out_key: NestedKey = "attribution",
    title: str | None = None,
) -> Any:
    """Heatmaps of the attribution of each hidden unit of ``site`` (rows) over the steps of
    one trajectory (columns), one panel per head.

    Each panel has a symmetric colour scale ``[-s, s]`` centred at zero, ``s`` the largest
    |attribution| drawn (red pushes the head up, blue down), printed in its title: heads in
    different units (a log-probability, a value) stay readable; ``shared_scale=True`` puts
    all panels on the largest ``s`` instead.

    Args:
        rollout: one attributed trajectory ``[T]`` (``rollout[0]`` of a batched rollout).
        site: the hidden site's name, as ``Attributed`` wrote it (``"module.0.module.1"``).
        heads: the heads (target names) to draw, in order (default: all that have ``site``).
        order: ``"index"`` (unit 0 at the top), ``"total"`` (each panel's units by total
            |attribution| over the trajectory, largest at the top), or a list of unit
            indices (the same order in every panel).
        max_units: draw only this many units of each panel (the largest total
            |attribution| first, unless ``order`` is a list).
        shared_scale: one colour scale for every panel.
        out_key: the attributions' root key.
        title: the figure title.

    Returns:
        The matplotlib figure; ``fig.axes[i].images[0].get_array()`` is panel ``i``'s
        ``[units, T]`` data, its rows the units named by the y tick labels.

    Examples:
        >>> from tensordict import TensorDict
        >>> a = torch.tensor([[1.0, -2.0, 0.5], [0.0, 4.0, -1.0]])   # (T=2, 3 units)
        >>> td = TensorDict({("attribution", "value", "h"): a}, batch_size=[2])
        >>> fig = unit_heatmap(td, "h", order="total")
        >>> fig.axes[0].images[0].get_array().tolist()   # unit 1 (|6|), 2 (|1.5|), 0 (|1|)
        [[-2.0, 4.0], [0.5, -1.0], [1.0, 0.0]]
        >>> fig.axes[0].get_title()
        'head: value (scale ±4)'
    """
    if max_units is not None and (
        isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1
    ):
        raise ValueError(f"max_units must be None or an int >= 1, got {max_units!r}")
    if heads is None:
        root = key_tuple(out_key)
        present = list(rollout.get(out_key).keys()) if out_key in rollout.keys() else []
        heads = [h for h in present if (*root, h, site) in rollout.keys(True)]
        if not heads:
            raise KeyError(
                f"no head under {out_key!r} has an attribution to site {site!r} (heads: "
                f"{present}); attribute to it with Attributed(..., inputs=[{site!r}])"
            )
    heads = list(heads)
    if not heads:
        raise ValueError("heads is empty: name at least one head, or pass None for all")
    data = {h: unit_matrix(rollout, site, h, out_key=out_key) for h in heads}
    rows = {h: _order(m, order, max_units) for h, m in data.items()}
    drawn = {h: m[rows[h]] for h, m in data.items()}
    limits = {h: float(m.abs().max()) or 1.0 for h, m in drawn.items()}
    if shared_scale:
        limits = dict.fromkeys(limits, max(limits.values()))
    n_units, steps = next(iter(drawn.values())).shape
    plt = pyplot()
    fig, axes = plt.subplots(
        len(drawn),
        1,
        figsize=(max(6.0, steps / 20 + 2), min(0.18 * n_units + 1.2, 6.0) * len(drawn) + 0.6),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, (head, m) in zip(axes[:, 0], drawn.items(), strict=True):
        s = limits[head]
        image = ax.imshow(
            m.numpy(), aspect="auto", cmap="RdBu_r", vmin=-s, vmax=s, interpolation="nearest"
        )
        every = max(1, -(-len(rows[head]) // MAX_LABELS))  # ceil: at most MAX_LABELS labels
        ticks = list(range(0, len(rows[head]), every))
        ax.set_yticks(ticks, [str(rows[head][t]) for t in ticks])
        ranked = isinstance(order, str) and (order == "total" or max_units is not None)
        ax.set_ylabel("unit, largest total |attribution| first" if ranked else "unit")
        ax.set_title(f"head: {head} (scale ±{s:.3g})")
        fig.colorbar(image, ax=ax, label="attribution", shrink=0.9)
    axes[-1, 0].set_xlabel("environment step")
    fig.suptitle(title or f"attribution to the units of {site}")
    return fig
