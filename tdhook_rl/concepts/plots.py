"""Figures for :mod:`tdhook_rl.concepts`: SAE feature dashboards, geometry per layer, CKA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tdhook_rl.concepts.dashboard import FeatureDashboard

__all__ = ["plot_cka", "plot_feature_dashboard", "plot_intrinsic_dimension"]


def _pyplot() -> Any:
    from tdhook_rl.viz._mpl import pyplot  # matplotlib only when a figure is drawn

    return pyplot()


def _save(fig: Any, path: str | Path | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def plot_feature_dashboard(
    board: FeatureDashboard, *, columns: int = 4, path: str | Path | None = None
) -> Any:
    """One panel per feature: the histogram of its non-zero activations, titled with its
    index and firing frequency, the top activation values marked as ticks on the axis.

    Returns:
        the matplotlib figure (also written to ``path`` when given).
    """
    plt = _pyplot()
    n = len(board.features)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        edges, counts = board.bin_edges[i].numpy(), board.histogram[i].numpy()
        ax.bar(edges[:-1], counts, width=edges[1:] - edges[:-1], align="edge", color="tab:blue")
        tops = board.top_values[i][board.top_values[i] > 0].numpy()
        ax.plot(tops, [0.0] * len(tops), "|", color="tab:red", markersize=10)
        freq = float(board.frequency[i])
        fires = f"{freq:.1%} of samples" if freq > 0 else "never fires"
        ax.set_title(f"feature {int(board.features[i])} ({fires})", fontsize=10)
        ax.set_xlabel("activation")
    axes[0, 0].set_ylabel("samples")
    fig.suptitle(f"SAE features on {board.n} samples (red: top activations)")
    fig.tight_layout()
    return _save(fig, path)


def plot_intrinsic_dimension(
    dims: dict[str, float], *, path: str | Path | None = None, title: str = ""
) -> Any:
    """A bar per layer: its TwoNN intrinsic dimension."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(dims), 3.0))
    ax.bar(range(len(dims)), list(dims.values()), color="tab:green")
    ax.set_xticks(range(len(dims)), list(dims), rotation=30, ha="right")
    ax.set_ylabel("intrinsic dimension (TwoNN)")
    ax.set_title(title or "intrinsic dimension per layer")
    return _save(fig, path)


def plot_cka(matrix: torch.Tensor, names: Sequence[str], *, path: str | Path | None = None) -> Any:
    """A heat map of a :func:`~tdhook_rl.concepts.geometry.cka_matrix`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(names), 1.2 + 0.7 * len(names)))
    image = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), list(names), rotation=30, ha="right")
    ax.set_yticks(range(len(names)), list(names))
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{float(matrix[i, j]):.2f}", ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] < 0.6 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, label="linear CKA")
    return _save(fig, path)
