"""Saliency movies (Greydanus et al., 2018): frames of an image-observation agent with its
saliency maps overlaid, written as animated GIFs (matplotlib's ``PillowWriter``; no ffmpeg).

A frame ``[C, H, W]`` of channel planes (MinAtar's paddle, ball, trail, brick, ...) is drawn
as one colour image, each channel in its own colour (:func:`frame_rgb`); a saliency map
``[H, W]`` is drawn on top of a dimmed copy as a coloured layer whose opacity grows with the
map's value (:func:`overlay_rgb`). :func:`saliency_movie` writes one panel for the frame and
one per map, frame after frame; each map keeps one scale over the whole movie (as Greydanus
et al. do), so brightness compares across frames (the brightest tenth of the frames
saturate, :func:`movie_scale`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tdhook_rl.viz._mpl import pyplot

__all__ = [
    "MAP_COLORS",
    "channel_colors",
    "frame_rgb",
    "map_color",
    "movie_scale",
    "overlay_rgb",
    "saliency_movie",
    "saliency_stills",
    "signed_overlay_rgb",
]

#: the overlay colours of the first maps (Greydanus et al.: policy blue, value red)
MAP_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.25, 0.55, 1.0),
    (1.0, 0.2, 0.15),
    (0.2, 0.9, 0.3),
    (1.0, 0.8, 0.1),
)


def map_color(name: str, i: int) -> tuple[float, float, float]:
    """The overlay colour of the ``i``-th map, called ``name``: a name that starts with
    ``"policy"`` is blue, with ``"value"`` red (Greydanus et al.'s colours), others by
    position in :data:`MAP_COLORS`.

    Examples:
        >>> map_color("value", 0) == MAP_COLORS[1]
        True
    """
    if name.startswith("policy"):
        return MAP_COLORS[0]
    if name.startswith("value"):
        return MAP_COLORS[1]
    return MAP_COLORS[i % len(MAP_COLORS)]


def channel_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours ``[n, 3]`` in ``[0, 1]`` (matplotlib's ``tab10``, skipping
    its grey), one per observation channel.

    Examples:
        >>> channel_colors(4).shape
        (4, 3)
    """
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    picks = [i for i in range(10) if i != 7]  # tab10's 7 is grey: too close to the dimmed frame
    return np.array([cmap(picks[i % len(picks)])[:3] for i in range(n)])


def _check_frames(frames: torch.Tensor, what: str = "frames") -> None:
    if frames.ndim != 4:
        raise ValueError(
            f"{what} must be [T, C, H, W] (time, channels, height, width), got shape "
            f"{tuple(frames.shape)}"
        )


def frame_rgb(frame: torch.Tensor, colors: np.ndarray | None = None) -> np.ndarray:
    """One frame ``[C, H, W]`` (or frames ``[T, C, H, W]``) of channel planes in ``[0, 1]`` as
    RGB ``[..., H, W, 3]``: each pixel the brightest of ``value * colour`` over the channels,
    black where every channel is 0.

    Args:
        frame: ``[C, H, W]`` or ``[T, C, H, W]``.
        colors: ``[C, 3]`` RGB in ``[0, 1]``; :func:`channel_colors` by default.

    Examples:
        >>> frame = torch.zeros(2, 3, 3)
        >>> frame[1, 0, 0] = 1.0
        >>> rgb = frame_rgb(frame, np.array([[1.0, 0, 0], [0, 0, 1.0]]))
        >>> rgb.shape, rgb[0, 0].tolist(), rgb[1, 1].tolist()
        ((3, 3, 3), [0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    """
    x = frame.detach().float().cpu().clamp(0, 1).numpy()
    n_channels = x.shape[-3]
    colors = channel_colors(n_channels) if colors is None else np.asarray(colors, dtype=float)
    if colors.shape != (n_channels, 3):
        raise ValueError(
            f"colors must be [{n_channels}, 3] (one RGB per channel), got {colors.shape}"
        )
    # (..., C, H, W, 1) * (C, 1, 1, 3) -> max over C -> (..., H, W, 3)
    return (x[..., None] * colors[:, None, None, :]).max(axis=-4)


def overlay_rgb(
    base: np.ndarray,
    saliency: np.ndarray,
    color: Sequence[float],
    scale: float,
    *,
    dim: float = 0.45,
    opacity: float = 0.9,
) -> np.ndarray:
    """``base`` RGB ``[H, W, 3]`` in grey (each pixel's brightest component) dimmed by ``dim``,
    with ``color`` blended in with opacity ``opacity * clip(saliency / scale, 0, 1)`` per
    pixel.

    Examples:
        >>> base = np.zeros((1, 2, 3))
        >>> out = overlay_rgb(base, np.array([[0.0, 2.0]]), (1.0, 0.0, 0.0), scale=2.0)
        >>> out[0, 0].tolist(), out[0, 1].round(2).tolist()
        ([0.0, 0.0, 0.0], [0.9, 0.0, 0.0])
    """
    alpha = opacity * np.clip(saliency / (scale if scale > 0 else 1.0), 0.0, 1.0)[..., None]
    grey = base.max(axis=-1, keepdims=True)  # the frame in grey: the colours are the maps'
    return (1 - alpha) * dim * grey + alpha * np.asarray(color, dtype=float)


def movie_scale(maps: np.ndarray, quantile: float = 0.9) -> float:
    """The full-opacity level of a movie's maps ``[T, H, W]``: the ``quantile`` of the
    per-frame maxima (``1.0`` where every map is zero).

    Examples:
        >>> maps = np.zeros((10, 2, 2))
        >>> maps[:, 0, 0] = np.arange(10)
        >>> round(movie_scale(maps), 2)
        8.1
    """
    peaks = maps.reshape(maps.shape[0], -1).max(axis=1)
    scale = float(np.quantile(peaks, quantile))
    return scale if scale > 0 else (float(peaks.max()) or 1.0)


def saliency_movie(
    frames: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    captions: Sequence[str] | None = None,
    colors: np.ndarray | None = None,
    channel_names: Sequence[str] | None = None,
    title: str | None = None,
    fps: int = 6,
    panel_inches: float = 2.2,
    dpi: int = 80,
    progress: bool = False,
) -> Path:
    """Writes a GIF: one panel with the frame and one per saliency map (the map over the dimmed
    frame), one movie frame per observation.

    Args:
        frames: ``[T, C, H, W]`` observations (channel planes in ``[0, 1]``).
        maps: ``{name: [T, H, W]}`` non-negative saliency (e.g. ``"policy"``, ``"value"``);
            each is drawn on one scale over the ``T`` frames (:func:`movie_scale`).
        path: the ``.gif`` to write (its folder must exist).
        captions: one line per frame under the panels (e.g. the step and the action).
        colors: ``[C, 3]`` channel colours (:func:`channel_colors` by default).
        channel_names: a legend of the channel colours under the frame panel.
        title: the figure's title.
        fps: movie frames per second.
        panel_inches, dpi: the size of a panel (inches) and the resolution.
        progress: show a progress bar while the frames render.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> frames = torch.rand(3, 2, 6, 6).round()
        >>> gif = saliency_movie(frames, {"value": torch.rand(3, 6, 6)},
        ...                      tempfile.mkdtemp() + "/movie.gif")
        >>> Image.open(gif).n_frames
        3
    """
    _check_frames(frames)
    t, c, h, w = frames.shape
    for name, m in maps.items():
        if tuple(m.shape) != (t, h, w):
            raise ValueError(
                f"saliency map {name!r} has shape {tuple(m.shape)}; expected [T, H, W] = "
                f"{[t, h, w]}, one map per frame"
            )
    if captions is not None and len(captions) != t:
        raise ValueError(f"{len(captions)} captions for {t} frames; give one per frame")
    from matplotlib.animation import FuncAnimation, PillowWriter

    plt = pyplot()
    colors = channel_colors(c) if colors is None else np.asarray(colors, dtype=float)
    rgb = frame_rgb(frames, colors)  # (T, H, W, 3)
    arrays = {k: m.detach().float().cpu().numpy() for k, m in maps.items()}
    # one scale per map over the movie: the 90th percentile of the per-frame maxima (the
    # brightest tenth of the frames saturate instead of dimming every other frame)
    scales = {k: movie_scale(a) for k, a in arrays.items()}
    n_panels = 1 + len(arrays)
    fig, axes = plt.subplots(
        1, n_panels, figsize=(panel_inches * n_panels, panel_inches + 0.8), squeeze=False
    )
    axes = axes[0]
    images = [axes[0].imshow(rgb[0], interpolation="nearest")]
    axes[0].set_title("frame")
    for i, (name, a) in enumerate(arrays.items()):
        color = map_color(name, i)
        images.append(
            axes[i + 1].imshow(
                overlay_rgb(rgb[0], a[0], color, scales[name]), interpolation="nearest"
            )
        )
        axes[i + 1].set_title(f"{name} saliency")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if channel_names is not None:
        handles = [
            plt.Line2D([], [], marker="s", ls="", color=colors[i], label=n)
            for i, n in enumerate(channel_names)
        ]
        fig.legend(handles=handles, loc="lower left", ncol=len(handles), fontsize=7, frameon=False)
    text = fig.text(0.5, 0.12, captions[0] if captions else "", ha="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.2, top=0.8, wspace=0.05)

    def draw(k: int) -> list[Any]:
        images[0].set_data(rgb[k])
        for i, (name, a) in enumerate(arrays.items()):
            color = map_color(name, i)
            images[i + 1].set_data(overlay_rgb(rgb[k], a[k], color, scales[name]))
        text.set_text(captions[k] if captions else "")
        return [*images, text]

    bar = tqdm(total=t, desc=f"movie {Path(path).name}", unit="frame", disable=not progress)

    def tick(done: int, total: int) -> None:
        bar.update(1)

    try:
        animation = FuncAnimation(fig, draw, frames=t, blit=False)
        animation.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi, progress_callback=tick)
    finally:
        bar.close()
        plt.close(fig)
    return Path(path)


def signed_overlay_rgb(
    base: np.ndarray, attribution: np.ndarray, scale: float, *, dim: float = 0.45
) -> np.ndarray:
    """``base`` RGB ``[H, W, 3]`` in grey and dimmed, with red where ``attribution`` is
    positive and blue where it is negative, opacity ``|attribution| / scale`` (clipped at 1).

    Examples:
        >>> out = signed_overlay_rgb(np.zeros((1, 2, 3)), np.array([[1.0, -1.0]]), 1.0)
        >>> out[0, 0, 0] > out[0, 0, 2], out[0, 1, 2] > out[0, 1, 0]
        (np.True_, np.True_)
    """
    pos = overlay_rgb(base, np.clip(attribution, 0, None), MAP_COLORS[1], scale, dim=dim)
    neg = np.clip(-attribution, 0, None)
    alpha = 0.9 * np.clip(neg / (scale if scale > 0 else 1.0), 0.0, 1.0)[..., None]
    return (1 - alpha) * pos + alpha * np.asarray(MAP_COLORS[0])


def saliency_stills(
    frames: torch.Tensor,
    columns: Mapping[str, tuple[torch.Tensor, bool]],
    *,
    row_labels: Sequence[str] | None = None,
    colors: np.ndarray | None = None,
    title: str | None = None,
    panel_inches: float = 1.7,
) -> Any:
    """Maps of several methods side by side for a few frames: one row per frame, the frame
    first, then one column per map.

    Args:
        frames: ``[N, C, H, W]``.
        columns: ``{title: (maps [N, H, W], signed)}``; a signed map is drawn red (raises the
            target) and blue (lowers it) on one scale per column, ``max |map|``; an unsigned
            one (a magnitude, e.g. Greydanus saliency) in the movie's colour
            (:func:`map_color` of the title's last line), scaled by its column's maximum.
        row_labels: one label per frame (e.g. ``"step 12: left"``).
        colors: ``[C, 3]`` channel colours.
        title: the figure's title.
        panel_inches: the size of a panel.

    Returns:
        The matplotlib figure.

    Examples:
        >>> frames = torch.rand(2, 3, 5, 5).round()
        >>> fig = saliency_stills(frames, {"value": (torch.randn(2, 5, 5), True)})
        >>> len(fig.axes)
        4
    """
    _check_frames(frames)
    n, _c, h, w = frames.shape
    for name, (m, _) in columns.items():
        if tuple(m.shape) != (n, h, w):
            raise ValueError(
                f"map {name!r} has shape {tuple(m.shape)}; expected [N, H, W] = {[n, h, w]}"
            )
    plt = pyplot()
    rgb = frame_rgb(frames, colors)
    fig, axes = plt.subplots(
        n,
        1 + len(columns),
        figsize=(panel_inches * (1 + len(columns)), panel_inches * n + 0.6),
        squeeze=False,
        layout="constrained",
    )
    axes[0, 0].set_title("frame", fontsize=9)
    for j, (name, (m, signed)) in enumerate(columns.items(), start=1):
        a = m.detach().float().cpu().numpy()
        scale = float(np.abs(a).max())
        axes[0, j].set_title(name, fontsize=9)
        for i in range(n):
            if signed:
                image = signed_overlay_rgb(rgb[i], a[i], scale)
            else:
                color = map_color(name.split("\n")[-1], j - 1)
                image = overlay_rgb(rgb[i], a[i], color, scale)
            axes[i, j].imshow(image, interpolation="nearest")
    for i in range(n):
        axes[i, 0].imshow(rgb[i], interpolation="nearest")
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
