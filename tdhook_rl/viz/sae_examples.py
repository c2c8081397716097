"""The top-activating samples of SAE features, drawn as what the agent saw: double-pendulum
frames (cart and two poles) or Connect Four boards, one row per feature of a
:class:`~tdhook_rl.concepts.FeatureDashboard`, one column per top sample.

Every drawn panel is titled ``sample <i>`` (the flat sample index of the dashboard, i.e. the
row of ``states``) and the feature's value there, so a figure can be read back.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch

from tdhook_rl.viz._mpl import pyplot
from tdhook_rl.viz.connect_four_board import connect_four_heatmap

if TYPE_CHECKING:
    from tdhook_rl.concepts.dashboard import FeatureDashboard

__all__ = ["POLE_LENGTH", "draw_pendulum", "pendulum_states", "sae_examples"]

#: the length of each pole of ``InvertedDoublePendulum-v5`` (m, from its MuJoCo model)
POLE_LENGTH = 0.6
#: an episode ends when the tip drops to this height (m)
FALL_HEIGHT = 1.0
KINDS = ("pendulum", "connect_four")


def pendulum_states(observation: Any) -> torch.Tensor:
    """``(cart position, hinge 1 angle, hinge 2 angle)`` from *raw* (not standardized)
    observations ``[..., 9]`` (cart position, sines, cosines, ...: see
    :data:`tdhook_rl.envs.double_pendulum.FEATURE_NAMES`), the angles by ``atan2``; it equals
    the rollout's ``"qpos"`` up to rounding.

    Examples:
        >>> obs = torch.tensor([[0.1, 1.0, 0.0, 0.0, 1.0, 0, 0, 0, 0]])
        >>> pendulum_states(obs)
        tensor([[0.1000, 1.5708, 0.0000]])
    """
    obs = torch.as_tensor(observation, dtype=torch.float32)
    if obs.ndim == 0 or obs.shape[-1] != 9:
        raise ValueError(
            f"expected raw double-pendulum observations [..., 9], got shape {tuple(obs.shape)}"
            "; pass the rollout's 'raw_observation' (or its 'qpos' directly to sae_examples)"
        )
    angles = torch.atan2(obs[..., 1:3], obs[..., 3:5])
    return torch.cat([obs[..., :1], angles], -1)


def draw_pendulum(ax: Any, state: Any, *, color: str = "tab:cyan", title: str | None = None) -> Any:
    """Draws one double-pendulum frame on ``ax``: the rail, the cart, the two poles, the
    height below which the episode ends (dashed) and the state in numbers (cart position,
    both hinge angles in degrees).

    Args:
        ax: a matplotlib axes.
        state: ``(cart position, hinge 1 angle, hinge 2 angle)`` (m, rad; hinge 2 relative to
            pole 1, as in ``"qpos"``).
        color: the poles' colour.
        title: the axes title.

    Returns:
        the ``(x, height)`` of the tip of pole 2.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots()
        >>> x, z = draw_pendulum(ax, [0.0, 0.0, 0.0])   # upright: the tip 1.2 m up
        >>> round(x, 6), round(z, 6)
        (0.0, 1.2)
    """
    from matplotlib.patches import Rectangle

    s = torch.as_tensor(state, dtype=torch.float64).flatten()
    if s.numel() != 3:
        raise ValueError(f"a pendulum state is (cart, angle 1, angle 2), got {s.numel()} values")
    x, a1, a2 = (float(v) for v in s)
    x1, z1 = x + POLE_LENGTH * math.sin(a1), POLE_LENGTH * math.cos(a1)
    x2, z2 = x1 + POLE_LENGTH * math.sin(a1 + a2), z1 + POLE_LENGTH * math.cos(a1 + a2)
    ax.plot([-1.1, 1.1], [0, 0], color="#5060b0", lw=2, zorder=1)  # the rail (cart in [-1, 1])
    ax.axhline(FALL_HEIGHT, color="tab:red", lw=0.8, ls="--", zorder=0)
    ax.add_patch(Rectangle((x - 0.12, -0.06), 0.24, 0.12, color="#b0a000", zorder=2))
    ax.plot([x, x1, x2], [0, z1, z2], color=color, lw=4, solid_capstyle="round", zorder=3)
    ax.plot([x, x1], [0, z1], "o", color="#303030", markersize=3, zorder=4)
    ax.text(0.03, 0.03, f"x {x:+.2f} m\n{math.degrees(a1):+.1f}° {math.degrees(a2):+.1f}°",
            transform=ax.transAxes, fontsize=7, va="bottom", color="#404040")  # fmt: skip
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.3 if min(z1, z2) < -0.2 else -0.5, 1.35)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return x2, z2


def sae_examples(
    board: FeatureDashboard,
    states: Any,
    *,
    kind: Literal["pendulum", "connect_four"] = "pendulum",
    top: int | None = None,
    labels: list[str] | None = None,
    suptitle: str | None = None,
) -> Any:
    """Each feature's top-activating samples, drawn as pendulum frames or Connect Four boards.

    Args:
        board: a :func:`~tdhook_rl.concepts.feature_dashboard` (its ``top_indices`` count the
            rows of ``states``).
        states: for ``"pendulum"``, ``[N, 3]`` (cart position, hinge angles: the rollout's
            ``"qpos"`` flattened, or :func:`pendulum_states`); for ``"connect_four"``,
            ``[N, 6, 7]`` boards with ``+1``, ``-1``, ``0``.
        kind: how to draw a sample.
        top: samples per feature (default: all the dashboard kept).
        labels: a row label per feature (default ``"feature <j>"``).
        suptitle: the figure's title.

    Returns:
        the matplotlib figure; a panel's title is ``"sample <i>\\nf = <value>"``.

    Examples:
        >>> from tdhook_rl.concepts import SparseAutoencoder, feature_dashboard
        >>> sae = SparseAutoencoder(4, 8, seed=0)
        >>> dash = feature_dashboard(sae, torch.randn(30, 4), features=[0, 1], top=3)
        >>> fig = sae_examples(dash, torch.randn(30, 3) * 0.3)
        >>> len(fig.axes)
        6
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    states = torch.as_tensor(states).detach().cpu()
    want = (3,) if kind == "pendulum" else (6, 7)
    if tuple(states.shape[1:]) != want or states.shape[0] < board.n:
        raise ValueError(
            f"{kind} states must be [N, {', '.join(map(str, want))}] with N >= the dashboard's "
            f"{board.n} samples, got shape {tuple(states.shape)}"
        )
    n_top = board.top_indices.shape[1] if top is None else top
    if not isinstance(n_top, int) or not 1 <= n_top <= board.top_indices.shape[1]:
        raise ValueError(f"top must be in [1, {board.top_indices.shape[1]}], got {top!r}")
    n_f = len(board.features)
    if labels is not None and len(labels) != n_f:
        raise ValueError(f"{len(labels)} labels for {n_f} features")
    plt = pyplot()
    size = (1.9, 1.9) if kind == "pendulum" else (2.2, 2.2)
    fig, axes = plt.subplots(
        n_f,
        n_top,
        figsize=(size[0] * n_top + 0.8, size[1] * n_f + (0.5 if suptitle else 0.1)),
        squeeze=False,
        layout="constrained",
    )
    for row in range(n_f):
        for col in range(n_top):
            ax = axes[row, col]
            index = int(board.top_indices[row, col])
            if index < 0:  # the feature fired on fewer samples
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.set_title("(does not fire)", fontsize=9, color="gray")
                continue
            title = f"sample {index}\nf = {float(board.top_values[row, col]):.3g}"
            if kind == "pendulum":
                draw_pendulum(ax, states[index], title=title)
            else:
                connect_four_heatmap(ax, states[index], torch.zeros(6, 7), title=title)
                ax.set_xlabel("")
                ax.title.set_fontsize(9)
        label = labels[row] if labels is not None else f"feature {int(board.features[row])}"
        axes[row, 0].set_ylabel(label, fontsize=10, fontweight="bold")
    if suptitle:
        fig.suptitle(suptitle)
    return fig
