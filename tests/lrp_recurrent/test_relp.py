"""Relevance patching (RelP) against its slow definition: LRP-epsilon written out by hand for a
small MLP, the relevance at each site divided by the corrupted activation, times the patch."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import tdhook_rl as thr
from tdhook_rl.attribution.lrp import Composite, Epsilon
from tdhook_rl.latent.relevance_patching import relevance_patching

EPS = 1e-4
SITES = ["module.0", "module.1", "module.2", "module.3", "module.4"]


def stab(z: torch.Tensor) -> torch.Tensor:
    return z + torch.where(z >= 0, EPS, -EPS)


def net(bias: bool = True) -> TensorDictModule:
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Linear(3, 6, bias=bias), nn.Tanh(), nn.Linear(6, 5, bias=bias), nn.ReLU(),
        nn.Linear(5, 2, bias=bias),
    ).double()  # fmt: skip
    return TensorDictModule(layers, ["observation"], ["out"])


def slow_site_relevance(layers: nn.Sequential, x: torch.Tensor, head: int) -> list[torch.Tensor]:
    """LRP-epsilon of one sample and head, by hand: the relevance at each site's output."""
    w1, w2, w3 = (layers[i].weight for i in (0, 2, 4))
    b1, b2, b3 = (
        layers[i].bias if layers[i].bias is not None else torch.zeros(layers[i].out_features)
        for i in (0, 2, 4)
    )
    z1 = w1 @ x + b1
    h1 = z1.tanh()
    z2 = w2 @ h1 + b2
    h2 = z2.relu()
    y = w3 @ h2 + b3
    r_y = torch.zeros_like(y)
    r_y[head] = y[head]  # zennit's top relevance: one-hot times the output
    r_h2 = h2 * (w3.T @ (r_y / stab(y)))
    r_z2 = r_h2  # ReLU: pass-through
    r_h1 = h1 * (w2.T @ (r_z2 / stab(z2)))
    r_z1 = r_h1  # Tanh: pass-through
    return [r_z1, r_h1, r_z2, r_h2, r_y]


def slow_relp(policy, clean, corrupted):
    layers = policy.module
    with torch.no_grad():
        acts = {}
        for name, td in (("clean", clean), ("corrupted", corrupted)):
            a, out = td["observation"], []
            for layer in layers:
                a = layer(a)
                out.append(a)
            acts[name] = out
        n = clean.batch_size[0]
        effects = torch.zeros(len(SITES), 2, n, dtype=torch.float64)
        units = [torch.zeros(2, n, a.shape[-1], dtype=torch.float64) for a in acts["clean"]]
        for b in range(n):
            for head in range(2):
                rel = slow_site_relevance(layers, corrupted["observation"][b], head)
                for s in range(len(SITES)):
                    a_c, a_x = acts["clean"][s][b], acts["corrupted"][s][b]
                    coefficient = torch.where(
                        a_x == 0, 0.0, rel[s] / torch.where(a_x == 0, 1.0, a_x)
                    )
                    units[s][head, b] = (a_c - a_x) * coefficient
                    effects[s, head, b] = units[s][head, b].sum()
        gap = acts["clean"][-1].mean(0) - acts["corrupted"][-1].mean(0)
    return effects, units, effects.mean(-1) / gap


@pytest.mark.parametrize("batch", [(6,), (2, 3)])
def test_relp_matches_the_slow_definition(batch):
    policy = net()
    clean = TensorDict(observation=torch.randn(*batch, 3, dtype=torch.float64), batch_size=batch)
    corrupted = TensorDict(
        observation=torch.randn(*batch, 3, dtype=torch.float64), batch_size=batch
    )
    heads = {"left": ("out", 0), "right": ("out", 1)}
    result = relevance_patching(
        policy, clean, corrupted, heads, SITES,
        composite=Composite({nn.Linear: Epsilon(EPS)}), per_unit=True,
    )  # fmt: skip
    flat = (clean.reshape(-1), corrupted.reshape(-1))
    effects, units, estimate = slow_relp(policy, *flat)
    torch.testing.assert_close(result.effects.reshape(len(SITES), 2, -1), effects)
    torch.testing.assert_close(result.estimate, estimate)
    for site, want in zip(SITES, units, strict=True):
        torch.testing.assert_close(result.units[site].reshape(2, -1, want.shape[-1]), want)
    # a different rule gives a different estimate: the composite is really used
    other = relevance_patching(
        policy, clean, corrupted, heads, SITES, composite=Composite({nn.Linear: Epsilon(1.0)})
    )
    assert not torch.allclose(other.estimate[:3], result.estimate[:3])


def test_relp_is_exact_on_a_bias_free_linear_net():
    """No bias, epsilon -> 0, linear: the propagation coefficient is the gradient, so RelP,
    AtP and exact activation patching agree (all sites restore everything)."""
    torch.manual_seed(3)
    layers = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).double()
    policy = TensorDictModule(layers, ["observation"], ["out"])
    clean = TensorDict(observation=torch.rand(10, 3, dtype=torch.float64) + 0.5, batch_size=[10])
    corrupted = TensorDict(
        observation=torch.rand(10, 3, dtype=torch.float64) - 1.5, batch_size=[10]
    )
    heads = {"a": ("out", 0), "b": ("out", 1)}
    relp = relevance_patching(
        policy, clean, corrupted, heads, composite=Composite({nn.Linear: Epsilon(0.0)})
    )
    atp = thr.attribution_patching(policy, clean, corrupted, heads)
    exact = thr.activation_patching(policy, clean, corrupted, heads)
    torch.testing.assert_close(relp.effects, atp.effects)
    torch.testing.assert_close(relp.estimate, exact.restored)
    torch.testing.assert_close(relp.patched, exact.patched)


class Doubled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_relp_refuses_an_uncovered_module():
    layers = nn.Sequential(nn.Linear(3, 4), Doubled())
    policy = TensorDictModule(layers, ["observation"], ["out"])
    td = TensorDict(observation=torch.randn(4, 3), batch_size=[4])
    with pytest.raises(
        ValueError, match=r"LRP has no rule for 1 module\(s\): 'module.1' \(Doubled\)"
    ):
        relevance_patching(policy, td, td.clone(), {"v": ("out", 0)}, ["module.0"])
