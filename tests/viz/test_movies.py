"""The saliency movie writer: the GIF has one frame per observation and the panels' pixels
are the frame and the maps as the colour formulas say; bad shapes are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tdhook_rl.viz.movies import (
    MAP_COLORS,
    frame_rgb,
    movie_scale,
    overlay_rgb,
    saliency_movie,
    saliency_stills,
    signed_overlay_rgb,
)

COLORS = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def test_frame_rgb_against_a_loop():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 2, 4, 5, generator=g).round()
    rgb = frame_rgb(frames, COLORS)
    assert rgb.shape == (3, 4, 5, 3)
    for t in range(3):
        for i in range(4):
            for j in range(5):
                expected = np.zeros(3)
                for c in range(2):
                    expected = np.maximum(expected, float(frames[t, c, i, j]) * COLORS[c])
                np.testing.assert_allclose(rgb[t, i, j], expected)


def test_overlays():
    base = np.full((1, 2, 3), 0.5)
    out = overlay_rgb(base, np.array([[0.0, 4.0]]), (0.0, 0.0, 1.0), scale=2.0, dim=0.5)
    np.testing.assert_allclose(out[0, 0], [0.25, 0.25, 0.25])  # no saliency: dimmed grey
    np.testing.assert_allclose(out[0, 1], 0.1 * 0.25 + 0.9 * np.array([0.0, 0.0, 1.0]))
    signed = signed_overlay_rgb(np.zeros((1, 2, 3)), np.array([[2.0, -2.0]]), 2.0)
    np.testing.assert_allclose(signed[0, 0], 0.9 * np.array(MAP_COLORS[1]))
    np.testing.assert_allclose(signed[0, 1], 0.9 * np.array(MAP_COLORS[0]))
    assert movie_scale(np.zeros((3, 2, 2))) == 1.0


def test_movie_frames_and_pixels(tmp_path):
    t, h, w = 5, 10, 10
    frames = torch.zeros(t, 2, h, w)
    frames[:, 0, 9, 4] = 1.0  # a green paddle
    value = torch.zeros(t, h, w)
    value[:, 2, 7] = torch.arange(1.0, t + 1)  # one salient pixel, brighter each frame
    gif = saliency_movie(
        frames,
        {"value": value},
        tmp_path / "movie.gif",
        captions=[f"step {k}" for k in range(t)],
        colors=COLORS,
        panel_inches=2.0,
        dpi=50,
    )
    image = Image.open(gif)
    assert image.n_frames == t
    assert image.size == (2 * 2.0 * 50, (2.0 + 0.8) * 50)  # two panels, and the caption
    # the last frame: the salient pixel saturates; find the value panel's red-ish pixels
    image.seek(t - 1)
    rgb = np.asarray(image.convert("RGB")).astype(float)
    right = rgb[:, rgb.shape[1] // 2 :]
    left = rgb[:, : rgb.shape[1] // 2]
    red = (right[..., 0] > 180) & (right[..., 1] < 120) & (right[..., 2] < 120)
    assert red.any()  # the map's pixel, in the value colour
    green = (left[..., 1] > 180) & (left[..., 0] < 80)
    assert green.any() and not ((left[..., 0] > 180) & (left[..., 1] < 120)).any()


def test_stills_layout():
    frames = torch.rand(3, 2, 6, 6).round()
    fig = saliency_stills(
        frames,
        {"a": (torch.rand(3, 6, 6), False), "b": (torch.randn(3, 6, 6), True)},
        row_labels=["x", "y", "z"],
    )
    assert len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes[:3]] == ["frame", "a", "b"]


def test_bad_shapes(tmp_path):
    frames = torch.zeros(4, 2, 6, 6)
    with pytest.raises(ValueError, match=r"\[T, C, H, W\]"):
        saliency_movie(frames[0], {}, tmp_path / "m.gif")
    with pytest.raises(ValueError, match="saliency map 'value'"):
        saliency_movie(frames, {"value": torch.zeros(4, 5, 6)}, tmp_path / "m.gif")
    with pytest.raises(ValueError, match="3 captions for 4 frames"):
        saliency_movie(frames, {}, tmp_path / "m.gif", captions=["a", "b", "c"])
    with pytest.raises(ValueError, match="colors must be"):
        frame_rgb(frames, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="map 'a'"):
        saliency_stills(frames, {"a": (torch.zeros(3, 6, 6), True)})
