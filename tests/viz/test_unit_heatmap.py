"""``viz.unit_heatmap``: what is drawn is the data (read back from the image artist), in the
order asked for, on a symmetric printed scale; bad input is refused with a named error."""

from __future__ import annotations

import re

import pytest
import torch
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl import viz
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.targets import ActionLoc

from models import OBS, shared_trunk_actor_critic

TRUNK = "module.0.module.1"
T = 20


@pytest.fixture(scope="module")
def rollout():
    """A trajectory [T] attributed to the trunk's 32 units, for two heads."""
    explained = thr.Attributed(
        shared_trunk_actor_critic(),
        IntegratedGradients(n_steps=8),
        inputs=[TRUNK],
        targets={"policy": ActionLoc(), "value": "state_value"},
    )
    obs = torch.randn(T, OBS, generator=torch.Generator().manual_seed(0))
    return explained(TensorDict(observation=obs, batch_size=[T]))


def panels(fig):
    return [ax for ax in fig.axes if ax.get_title().startswith("head:")]


def drawn(ax) -> torch.Tensor:
    return torch.as_tensor(ax.images[0].get_array().data)


def printed_scale(ax) -> float:
    return float(re.search(r"scale ±([0-9.e+-]+)", ax.get_title()).group(1))


def test_each_panel_draws_the_units_by_steps_on_a_symmetric_printed_scale(rollout, tmp_path):
    fig = viz.unit_heatmap(rollout, TRUNK)
    assert [ax.get_title().split(" (")[0] for ax in panels(fig)] == ["head: policy", "head: value"]
    for ax, head in zip(panels(fig), ("policy", "value"), strict=True):
        a = rollout["attribution", head, TRUNK]  # (T, 32)
        torch.testing.assert_close(drawn(ax), a.T, atol=0, rtol=0)
        low, high = ax.images[0].get_clim()
        assert low == -high == -float(a.abs().max())
        assert printed_scale(ax) == pytest.approx(high, rel=1e-2)
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(u) for u in range(32)]
    # the two heads are in different units: each keeps its own scale unless asked
    assert len({ax.images[0].get_clim() for ax in panels(fig)}) == 2
    shared = viz.unit_heatmap(rollout, TRUNK, shared_scale=True)
    assert len({ax.images[0].get_clim() for ax in panels(shared)}) == 1
    fig.savefig(tmp_path / "units.png")
    assert (tmp_path / "units.png").stat().st_size > 1000


def test_units_ordered_by_total_and_cut_to_the_largest(rollout):
    a = rollout["attribution", "value", TRUNK].T  # (32, T)
    by_total = sorted(range(32), key=lambda u: -float(a[u].abs().sum()))
    fig = viz.unit_heatmap(rollout, TRUNK, ["value"], order="total")
    (ax,) = panels(fig)
    torch.testing.assert_close(drawn(ax), a[by_total], atol=0, rtol=0)
    assert [int(t.get_text()) for t in ax.get_yticklabels()] == by_total
    (top,) = panels(viz.unit_heatmap(rollout, TRUNK, ["value"], max_units=5))
    torch.testing.assert_close(drawn(top), a[by_total[:5]], atol=0, rtol=0)
    # the scale is that of what is drawn
    assert top.images[0].get_clim()[1] == float(a[by_total[:5]].abs().max())
    (mine,) = panels(viz.unit_heatmap(rollout, TRUNK, ["value"], order=[3, 0, 7]))
    torch.testing.assert_close(drawn(mine), a[[3, 0, 7]], atol=0, rtol=0)


def test_a_conv_site_is_drawn_per_channel():
    a = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    td = TensorDict({("attribution", "win", "conv"): a}, batch_size=[6])
    (ax,) = panels(viz.unit_heatmap(td, "conv"))
    torch.testing.assert_close(drawn(ax), a.sum((-2, -1)).T)


def test_bad_input_is_named(rollout):
    with pytest.raises(ValueError, match=r"one trajectory \[T\]; got batch \(4, 5\)"):
        viz.unit_heatmap(rollout.reshape(4, 5), TRUNK)
    with pytest.raises(KeyError, match="no head under 'attribution' has an attribution to site"):
        viz.unit_heatmap(rollout, "module.9")
    with pytest.raises(KeyError, match=r"no attribution \('attribution', 'critic', "):
        viz.unit_heatmap(rollout, TRUNK, ["critic"])
    with pytest.raises(ValueError, match="order must be one of"):
        viz.unit_heatmap(rollout, TRUNK, order="random")
    with pytest.raises(ValueError, match=r"distinct unit indices in \[0, 32\)"):
        viz.unit_heatmap(rollout, TRUNK, order=[0, 0, 40])
    with pytest.raises(ValueError, match="max_units must be None or an int >= 1, got 0"):
        viz.unit_heatmap(rollout, TRUNK, max_units=0)
    with pytest.raises(ValueError, match="heads is empty"):
        viz.unit_heatmap(rollout, TRUNK, [])
