"""Concept relevance (CRP) against its slow definition: LRP-epsilon of a tiny conv net written
out by hand (the convolution's rule as explicit loops over channels, positions and kernel
taps), the relevance at the conv's output zeroed except the chosen channels."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import tdhook_rl as thr
from tdhook_rl.attribution.lrp import LRP, Composite, Epsilon
from tdhook_rl.attribution.lrp.conditional import ConditionalLRP, channel_relevance, top_channels

EPS = 1e-3


def stab(z):
    return z + torch.where(z >= 0, EPS, -EPS)


def tiny() -> TensorDictModule:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(-3), nn.Linear(4 * 3 * 3, 3)
    ).double()
    return TensorDictModule(net, ["observation"], ["logits"])


def slow_crp(net: nn.Sequential, x: torch.Tensor, head: int, channels: list[int]) -> torch.Tensor:
    """One sample ``(2, 5, 5)``: R(x | channels) for ``logits[head]``."""
    conv, lin = net[0], net[3]
    z = conv(x[None])[0]  # (4, 3, 3)
    h = z.relu()
    y = lin(h.flatten())
    r_y = torch.zeros_like(y)
    r_y[head] = y[head]
    r_h = (h.flatten() * (lin.weight.T @ (r_y / stab(y)))).reshape(z.shape)
    r_z = r_h.clone()  # ReLU: pass-through
    for c in range(z.shape[0]):
        if c not in channels:
            r_z[c] = 0.0  # the condition
    s = r_z / stab(z)
    r_x = torch.zeros_like(x)
    for c in range(z.shape[0]):
        for i in range(z.shape[1]):
            for j in range(z.shape[2]):
                for k in range(x.shape[0]):
                    for di in range(3):
                        for dj in range(3):
                            contribution = conv.weight[c, k, di, dj] * x[k, i + di, j + dj]
                            r_x[k, i + di, j + dj] += contribution * s[c, i, j]
    return r_x


def attribute(policy, method, td, inputs=("observation",)):
    targets = {f"logit{i}": ("logits", i) for i in range(3)}
    return thr.Attributed(policy, method, inputs=list(inputs), targets=targets)(td)


COMPOSITE = Composite({nn.Conv2d: Epsilon(EPS), nn.Linear: Epsilon(EPS)})


@pytest.mark.parametrize("batch", [(), (3,)])  # the conv takes one batch dimension
def test_crp_matches_the_slow_definition_for_every_target_at_once(batch):
    policy = tiny()
    td = TensorDict(observation=torch.randn(*batch, 2, 5, 5, dtype=torch.float64), batch_size=batch)
    channels = [1, 3]
    out = attribute(policy, ConditionalLRP(COMPOSITE, {"module.0": channels}), td)
    flat = td["observation"].reshape(-1, 2, 5, 5)
    for head in range(3):
        got = out["attribution", f"logit{head}", "observation"].reshape(-1, 2, 5, 5)
        want = torch.stack([slow_crp(policy.module, x, head, channels) for x in flat])
        torch.testing.assert_close(got, want)


def test_conditional_relevances_add_up_to_lrp_and_concepts_are_selected():
    """R(x) is linear in the relevance at the site: the per-channel R(x | c) sum to R(x); the
    channel with the largest summed relevance at the site is what top_channels returns."""
    policy = tiny()
    td = TensorDict(observation=torch.randn(6, 2, 5, 5, dtype=torch.float64), batch_size=[6])
    full = attribute(policy, LRP(COMPOSITE), td)["attribution", "logit0", "observation"]
    parts = [
        attribute(policy, ConditionalLRP(COMPOSITE, {"module.0": [c]}), td)[
            "attribution", "logit0", "observation"
        ]
        for c in range(4)
    ]
    torch.testing.assert_close(sum(parts), full)
    site = attribute(policy, LRP(COMPOSITE), td, ["module.0"])["attribution", "logit0", "module.0"]
    assert site.shape == (6, 4, 3, 3)
    per_channel = channel_relevance(site, batch_dims=1)
    torch.testing.assert_close(per_channel, site.sum((0, 2, 3)))
    order = top_channels(site, 4, batch_dims=1)
    assert order.tolist() == per_channel.argsort(descending=True).tolist()


def test_bad_conditions():
    policy = tiny()
    td = TensorDict(observation=torch.randn(2, 2, 5, 5, dtype=torch.float64), batch_size=[2])
    with pytest.raises(ValueError, match=r"CRP condition names \['module.9'\]"):
        attribute(policy, ConditionalLRP(COMPOSITE, {"module.9": [0]}), td)
    with pytest.raises(ValueError, match="have no LRP rule of their own"):
        attribute(policy, ConditionalLRP(COMPOSITE, {"module.2": [0]}), td)  # Flatten
    with pytest.raises(ValueError, match=r"channels \[7\] do not exist"):
        attribute(policy, ConditionalLRP(COMPOSITE, {"module.0": [7]}), td)
    with pytest.raises(ValueError, match="needs a condition"):
        ConditionalLRP(COMPOSITE, {})
    with pytest.raises(ValueError, match="non-empty list of channel indices"):
        ConditionalLRP(COMPOSITE, {"module.0": 3})
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        top_channels(torch.ones(2, 4), 5, batch_dims=1)
