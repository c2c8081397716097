"""Attribution plots: features x steps for each head, and per-feature shares by head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.core.keys import key_tuple
from tdhook_rl.viz._mpl import pyplot


def _head_attributions(
    rollout: TensorDictBase, heads: Sequence[str] | None, input_key: NestedKey, out_key: NestedKey
) -> dict[str, torch.Tensor]:
    root = key_tuple(out_key)
    available = list(rollout.get(out_key).keys()) if out_key in rollout.keys() else []
    heads = list(heads) if heads is not None else available
    if not heads:
        raise KeyError(f"no attributions under {out_key!r}; run the policy through Attributed")
    out = {}
    for head in heads:
        key = (*root, head, *key_tuple(input_key))
        if key not in rollout.keys(True):
            raise KeyError(f"no attribution {key!r}; heads present: {available}")
        out[head] = rollout.get(key).detach().float().cpu()
    return out


def _names(feature_names: Sequence[str] | None, n: int) -> list[str]:
    if feature_names is None:
        return [f"feature {i}" for i in range(n)]
    if len(feature_names) != n:
        raise ValueError(f"{len(feature_names)} feature names for {n} features")
    return list(feature_names)


def attribution_over_time(
    rollout: TensorDictBase,
    heads: Sequence[str] | None = None,
    *,
    input_key: NestedKey = "observation",
    feature_names: Sequence[str] | None = None,
    out_key: NestedKey = "attribution",
    title: str | None = None,
    shared_scale: bool = True,
) -> Any:
    """Heatmaps of attribution (features x steps) along one trajectory, one panel per head.

    All panels share one colour scale, a diverging colormap centred at zero (red pushes the
    head up, blue down), bounded by the 99th percentile of |attribution| (beyond it, colours
    saturate).

    Args:
        rollout: a trajectory ``[T]`` (take one env copy of a batched rollout first).
        heads: target names to plot (default: all under ``out_key``).
        input_key: the attributed input; its features become rows (flattened).
        feature_names: row labels (e.g. the env's observation names).
        out_key: the attributions' root key.
        title: figure title.
        shared_scale: one colour scale for all panels (compare heads in the same units);
            ``False`` gives each head its own scale and colour bar (heads in different
            units, e.g. a log-probability and a value, stay readable).

    Returns:
        The matplotlib figure.
    """
    if rollout.batch_dims != 1:
        raise ValueError(
            f"attribution_over_time plots one trajectory [T]; got batch {tuple(rollout.batch_size)}"
            " (select one env copy, e.g. rollout[0])"
        )
    data = _head_attributions(rollout, heads, input_key, out_key)
    data = {h: a.reshape(a.shape[0], -1).T for h, a in data.items()}  # (features, T)
    n_features, steps = next(iter(data.values())).shape
    names = _names(feature_names, n_features)

    # scales are the 99th percentile of |attribution|, so that a few extreme steps (e.g. the
    # first, while the controller catches the pole) do not wash out the rest
    def robust_scale(tensors: list[torch.Tensor]) -> float:
        pooled = torch.cat([a.abs().flatten() for a in tensors])
        return float(torch.quantile(pooled, 0.99)) or float(pooled.max()) or 1.0

    shared = robust_scale(list(data.values()))
    plt = pyplot()
    fig, axes = plt.subplots(
        len(data),
        1,
        figsize=(max(7, steps / 25), 0.35 * n_features * len(data) + 1.5),
        squeeze=False,
        sharex=True,
        layout="constrained",  # tall stacks of panels keep no empty band under the title
    )
    image = None
    for ax, (head, a) in zip(axes[:, 0], data.items(), strict=True):
        scale = shared if shared_scale else robust_scale([a])
        image = ax.imshow(
            a.numpy(),
            aspect="auto",
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
            interpolation="nearest",
        )
        ax.set_yticks(range(n_features), names)
        ax.set_title(f"head: {head}")
        if not shared_scale:
            fig.colorbar(image, ax=ax, label="attribution", shrink=0.9)
    axes[-1, 0].set_xlabel("environment step")
    if shared_scale:
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="attribution", shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def feature_shares(
    rollout: TensorDictBase,
    heads: Sequence[str] | None = None,
    *,
    input_key: NestedKey = "observation",
    feature_names: Sequence[str] | None = None,
    out_key: NestedKey = "attribution",
    title: str | None = None,
) -> Any:
    """Grouped bars: each feature's share of the mean absolute attribution, per head.

    Returns:
        The matplotlib figure.
    """
    data = _head_attributions(rollout, heads, input_key, out_key)
    shares = {}
    for head, a in data.items():
        flat = a.reshape(-1, *a.shape[rollout.batch_dims :]).flatten(1).abs().mean(0)
        shares[head] = flat / flat.sum().clamp_min(1e-12)
    n = next(iter(shares.values())).numel()
    names = _names(feature_names, n)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * n), 4))
    width = 0.8 / len(shares)
    for i, (head, s) in enumerate(shares.items()):
        ax.bar(
            [j + (i - (len(shares) - 1) / 2) * width for j in range(n)],
            (100 * s).tolist(),
            width,
            label=head,
        )
    ax.set_xticks(range(n), names, rotation=35, ha="right")
    ax.set_ylabel("share of |attribution| (%)")
    ax.legend(title="head")
    ax.set_title(title or "What each head attends to")
    return fig
