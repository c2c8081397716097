"""Attribution plots: features x steps for each head, and per-feature shares by head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution.features import feature_groups
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
        input_key: the attributed input; its features become rows (flattened), or groups of
            them for inputs of more than 64 features (see
            :func:`~tdhook_rl.attribution.features.feature_groups`: an image's channels, a board's
            planes).
        feature_names: row labels (e.g. the env's observation names), one per feature or
            one per index of the input's first dimension.
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
    groups = feature_groups(next(iter(data.values())).shape[1:], feature_names)
    data = {h: groups(a).T for h, a in data.items()}  # (rows, T): features or their groups
    n_features, steps = next(iter(data.values())).shape
    names = groups.names

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
    """Grouped bars: each feature's share of the mean absolute attribution, per head (for
    inputs of more than 64 features, each group's share: see
    :func:`~tdhook_rl.attribution.features.feature_groups`).

    Returns:
        The matplotlib figure.
    """
    data = _head_attributions(rollout, heads, input_key, out_key)
    shares = {}
    for head, a in data.items():
        a = a.reshape(-1, *a.shape[rollout.batch_dims :])
        groups = feature_groups(a.shape[1:], feature_names)
        shares[head] = groups.shares(a)
    names = groups.names
    n = len(names)
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


def attribution_maps(
    rollout: TensorDictBase,
    heads: Sequence[str] | None = None,
    *,
    input_key: NestedKey = "observation",
    out_key: NestedKey = "attribution",
    steps: int = 6,
    title: str | None = None,
) -> Any:
    """Spatial attribution maps of image-like inputs (``[C, H, W]``: pixels, board planes) at
    a few steps of one trajectory: one row per head, one column per step, the input itself
    (summed over its channels) in the first row; each head's maps are summed over the
    channels and share one colour scale centred at zero.

    Args:
        rollout: a trajectory ``[T]`` whose input has at least 3 per-sample dimensions.
        heads: target names to plot (default: all under ``out_key``).
        input_key: the attributed input.
        out_key: the attributions' root key.
        steps: how many steps, evenly spaced from the first to the last.
        title: figure title.

    Returns:
        The matplotlib figure.

    Examples:
        >>> from tensordict import TensorDict
        >>> rollout = TensorDict(
        ...     {"observation": torch.rand(10, 3, 8, 8),
        ...      ("attribution", "policy", "observation"): torch.randn(10, 3, 8, 8)},
        ...     batch_size=[10],
        ... )
        >>> fig = attribution_maps(rollout, steps=4)
        >>> len([ax for ax in fig.axes if ax.images])   # input row + one head row, 4 steps
        8
    """
    if rollout.batch_dims != 1:
        raise ValueError(
            f"attribution_maps plots one trajectory [T]; got batch {tuple(rollout.batch_size)}"
            " (select one env copy, e.g. rollout[0])"
        )
    data = _head_attributions(rollout, heads, input_key, out_key)
    sample = next(iter(data.values()))
    if sample.ndim < 4:
        raise ValueError(
            f"attribution_maps needs image-like inputs [C, H, W]; {input_key!r} has per-step "
            f"shape {tuple(sample.shape[1:])} (use attribution_over_time)"
        )
    total = sample.shape[0]
    picked = torch.linspace(0, total - 1, min(steps, total)).round().long().unique().tolist()
    maps = {h: a.flatten(1, -3).sum(1)[picked] for h, a in data.items()}  # (steps, H, W)
    frames = rollout.get(input_key).detach().float().cpu().flatten(1, -3).sum(1)[picked]
    plt = pyplot()
    rows = 1 + len(maps)
    fig, axes = plt.subplots(
        rows,
        len(picked),
        figsize=(1.8 * len(picked) + 1.2, 1.9 * rows),
        squeeze=False,
        layout="constrained",
    )
    for col, step in enumerate(picked):
        axes[0, col].imshow(frames[col].numpy(), cmap="gray", interpolation="nearest")
        axes[0, col].set_title(f"step {step}")
    axes[0, 0].set_ylabel("input")
    for row, (head, m) in enumerate(maps.items(), start=1):
        scale = float(m.abs().max()) or 1.0
        image = None
        for col in range(len(picked)):
            image = axes[row, col].imshow(
                m[col].numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest"
            )
        axes[row, 0].set_ylabel(f"head: {head}")
        fig.colorbar(image, ax=axes[row, :].tolist(), label="attribution", shrink=0.9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def memory_map(
    trajectories: TensorDictBase,
    heads: Sequence[str],
    *,
    input_key: NestedKey = "observation",
    out_key: NestedKey = "attribution",
    title: str | None = None,
) -> Any:
    """Which steps' inputs each step's target depends on, for trajectories attributed through
    time (``Attributed(..., sample_dims=1)`` with one target per step): a matrix whose row
    ``t`` is target ``heads[t]``'s attribution summed over the features of each step's input
    (columns). Above the diagonal it is zero for a causal policy; the spread left of the
    diagonal is what its memory carried.

    Args:
        trajectories: one attributed trajectory ``[T]`` (e.g. ``out[0]``): signed sums on a
            colour scale centred at zero; or a batch ``[B, T]``: the mean over trajectories
            of each step's |attribution| (summed over features), on a sequential scale
            (signs that differ between trajectories do not cancel).
        heads: the target names, in step order (row ``t`` is ``heads[t]``).
        input_key: the attributed input.
        out_key: the attributions' root key.
        title: figure title.

    Returns:
        The matplotlib figure.

    Examples:
        >>> from tensordict import TensorDict
        >>> a = torch.tril(torch.ones(4, 4))[..., None].expand(4, 4, 2)  # [target, step, f]
        >>> td = TensorDict({("attribution", f"q{t}", "observation"): a[t] for t in range(4)},
        ...                 batch_size=[4])
        >>> fig = memory_map(td, [f"q{t}" for t in range(4)])
        >>> fig.axes[0].images[0].get_array()[0].tolist()
        [2.0, 0.0, 0.0, 0.0]
        >>> batch = torch.stack([td, td.apply(lambda x: -x)])   # [2, 4]: signs differ
        >>> memory_map(batch, [f"q{t}" for t in range(4)]).axes[0].images[0].get_array()[0].tolist()
        [2.0, 0.0, 0.0, 0.0]
    """
    if trajectories.batch_dims not in (1, 2):
        raise ValueError(
            f"memory_map plots one trajectory [T] or a batch [B, T]; got batch "
            f"{tuple(trajectories.batch_size)}"
        )
    data = _head_attributions(trajectories, heads, input_key, out_key)
    per_step = trajectories.batch_dims == 1
    rows = []
    for a in data.values():
        if per_step:  # (T, *f) -> (T,)
            rows.append(a.flatten(1).sum(1))
        else:  # (B, T, *f) -> (T,): mean over trajectories of |sum over features|
            rows.append(a.flatten(2).sum(2).abs().mean(0))
    matrix = torch.stack(rows)  # (targets, steps)
    scale = float(matrix.abs().max()) or 1.0
    plt = pyplot()
    size = max(4.0, 0.3 * matrix.shape[1] + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = ax.imshow(
        matrix.numpy(),
        cmap="RdBu_r" if per_step else "Reds",
        vmin=-scale if per_step else 0.0,
        vmax=scale,
        interpolation="nearest",
    )
    ax.set_xlabel(f"step of the input ({input_key!r})")
    ax.set_ylabel("target")
    ax.set_yticks(range(len(data)), list(data))
    label = "attribution (summed over features)"
    if not per_step:
        label = f"mean |attribution| over {trajectories.shape[0]} trajectories"
    fig.colorbar(image, ax=ax, label=label, shrink=0.9)
    ax.set_title(title or "What each step's target depends on")
    return fig
