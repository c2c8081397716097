"""Feature groups (what large inputs are shown and logged as: ``tdhook_rl.attribution.features``,
which the callback's scalars and the plots share) and the spatial maps of image-like inputs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdhook_rl import viz
from tdhook_rl.attribution.features import feature_groups


def test_small_inputs_stay_feature_by_feature():
    groups = feature_groups((3, 3))  # e.g. 3 agents x 3 observations
    values = torch.randn(5, 3, 3)
    assert groups.kind == "feature" and groups.names == [f"f{i}" for i in range(9)]
    torch.testing.assert_close(groups(values), values.reshape(5, 9))


def test_images_are_grouped_by_channel():
    groups = feature_groups((4, 20, 20))
    values = torch.randn(2, 4, 20, 20)
    assert groups.names == ["channel 0", "channel 1", "channel 2", "channel 3"]
    for c in range(4):  # the slow way: every pixel of the channel
        want = sum(values[:, c, i, j] for i in range(20) for j in range(20))
        torch.testing.assert_close(groups(values)[:, c], want, atol=1e-4, rtol=1e-5)


def test_long_vectors_are_cut_into_contiguous_blocks():
    groups = feature_groups((9,), max_rows=4)  # blocks of ceil(9 / 4) = 3
    assert groups.names == ["f0-2", "f3-5", "f6-8"]
    values = torch.arange(9.0)[None]
    assert groups(values).tolist() == [[0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8]]
    groups = feature_groups((130,))
    values = torch.randn(3, 130)
    sums = groups(values)
    assert sums.shape == (3, len(groups.names)) and len(groups.names) <= 64
    torch.testing.assert_close(sums.sum(1), values.sum(1), atol=1e-4, rtol=1e-5)
    first, last = groups.names[0], groups.names[-1]
    width = int(first.split("-")[1]) + 1
    torch.testing.assert_close(sums[:, 0], values[:, :width].sum(1))
    assert last.endswith("-129")


def test_a_single_channel_image_is_split_into_a_grid_of_blocks():
    """One channel grouped per channel would be one row holding everything (share 1.0)."""
    groups = feature_groups((1, 10, 7))
    rows, cols = [(0, 3), (4, 6), (7, 9)], [(0, 2), (3, 4), (5, 6)]  # tensor_split's bands
    assert groups.kind == "spatial"
    assert groups.names == [f"rows {a}-{b} cols {c}-{d}" for a, b in rows for c, d in cols]
    values = torch.randn(4, 1, 10, 7)
    want = torch.stack(
        [values[:, 0, a : b + 1, c : d + 1].sum((-1, -2)) for a, b in rows for c, d in cols], -1
    )
    torch.testing.assert_close(groups(values), want)
    assert groups.shares(values).max() < 1.0
    named = feature_groups((1, 10, 7), ["depth"])
    assert named.names[0] == "depth rows 0-3 cols 0-2"
    assert feature_groups((1, 8, 8)).kind == "feature"  # 64 features: one row each


def test_multi_agent_inputs_are_named_per_agent_or_pooled():
    values = torch.randn(5, 3, 2)  # 5 samples, 3 agents, 2 features
    groups = feature_groups((3, 2), ["x", "v"], agent_dims=1)
    assert groups.names == [f"agent{a}/{f}" for a in range(3) for f in ("x", "v")]
    torch.testing.assert_close(groups(values), values.reshape(5, 6))
    pooled = feature_groups((3, 2), ["x", "v"], agent_dims=1, pool_agents=True)
    assert pooled.names == ["x", "v"]
    torch.testing.assert_close(pooled(values), values.sum(1))
    torch.testing.assert_close(pooled.shares(values), groups.shares(values).reshape(3, 2).sum(0))
    images = feature_groups((2, 3, 20, 20), agent_dims=1)  # per-agent images: channels
    assert images.names[:2] == ["agent0/channel 0", "agent0/channel 1"]
    assert images(torch.ones(1, 2, 3, 20, 20)).tolist() == [[400.0] * 6]
    with pytest.raises(ValueError, match=r"3 feature names for an input of shape \(2,\)"):
        feature_groups((3, 2), ["x", "v", "t"], agent_dims=1)


def test_names_per_feature_or_per_leading_index():
    planes = [f"plane {i}" for i in range(18)]
    assert feature_groups((18, 8, 8), planes).names == planes
    assert feature_groups((9,), list("abcdefghi")).kind == "feature"
    with pytest.raises(ValueError, match="one per feature"):
        feature_groups((18, 8, 8), ["a", "b"])
    with pytest.raises(ValueError, match="per-sample shape"):
        feature_groups((3, 4))(torch.zeros(2, 4, 3))


def test_attribution_maps_show_the_channel_sums_at_evenly_spaced_steps():
    torch.manual_seed(0)
    attribution = torch.randn(11, 3, 6, 5)
    rollout = TensorDict(
        {
            "observation": torch.rand(11, 3, 6, 5),
            ("attribution", "policy", "observation"): attribution,
            ("attribution", "value", "observation"): 2 * attribution,
        },
        batch_size=[11],
    )
    fig = viz.attribution_maps(rollout, steps=3)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3 * 3  # input row + two heads, steps 0, 5, 10
    titles = [ax.get_title() for ax in images[:3]]
    assert titles == ["step 0", "step 5", "step 10"]
    policy_row = images[3:6]
    for ax, step in zip(policy_row, (0, 5, 10), strict=True):
        shown = torch.as_tensor(ax.images[0].get_array())
        torch.testing.assert_close(shown, attribution[step].sum(0))
        low, high = ax.images[0].get_clim()
        assert low == -high  # centred at zero
    with pytest.raises(ValueError, match="image-like"):
        viz.attribution_maps(
            TensorDict(
                {
                    "observation": torch.rand(4, 9),
                    ("attribution", "p", "observation"): torch.rand(4, 9),
                },
                batch_size=[4],
            )
        )
