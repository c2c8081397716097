"""``Attributed`` over an ``Intervened`` module with ``Patch``: the patch taken from the same
batch is repeated over the integration path's points, checked against integrated gradients
computed by hand on the patched network."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.attribution.quadrature import quadrature
from tdhook_rl.interventions import Patch
from tdhook_rl.targets import Index

from models import OBS, actor_critic_mlp

SITE = "module.1.module.1"  # the critic's first Tanh
UNITS = list(range(0, 32, 2))
N_STEPS = 6


def patched_heads(module, x: torch.Tensor, clean_h1: torch.Tensor) -> torch.Tensor:
    """(value, logit 0) of the patched network, written out layer by layer."""
    actor, critic = module[0].module, module[1].module
    h1 = torch.tanh(critic[0](x))
    h1 = torch.cat([h1[..., None], clean_h1.expand_as(h1)[..., None]], -1)
    keep = torch.zeros(32, dtype=torch.long)
    keep[UNITS] = 1
    h1 = h1.gather(-1, keep.expand(*h1.shape[:-1])[..., None]).squeeze(-1)
    value = critic[4](torch.tanh(critic[2](h1)))[..., 0]
    return torch.stack([value, actor(x)[..., 0]])


def slow_ig(module, x: torch.Tensor, clean_h1: torch.Tensor) -> torch.Tensor:
    """IG with a zero baseline, one path point at a time: (2 heads, *x.shape)."""
    alphas, weights = quadrature("gausslegendre", N_STEPS)
    total = torch.zeros(2, *x.shape)
    for alpha, weight in zip(alphas, weights, strict=True):
        for head in range(2):
            point = (alpha * x).detach().requires_grad_()
            patched_heads(module, point, clean_h1)[head].sum().backward()
            total[head] += weight * point.grad
    return total * x


@pytest.mark.parametrize("strategy", ["reverse", "forward", "replicate"])
def test_ig_of_a_patched_network_matches_a_slow_reference(batch_shape, strategy):
    module = actor_critic_mlp()
    clean = TensorDict(observation=torch.randn(*batch_shape, OBS), batch_size=batch_shape)
    corrupted = TensorDict(observation=torch.randn(*batch_shape, OBS), batch_size=batch_shape)
    recorded = thr.Recorded(module, [SITE])(clean.clone())
    patched = thr.Intervened(module, {SITE: Patch(recorded, units=UNITS)})
    explained = thr.Attributed(
        patched,
        IntegratedGradients(n_steps=N_STEPS),
        inputs=["observation"],
        targets={"value": "state_value", "logit0": Index("logits", 0)},
        strategy=strategy,
    )
    out = explained(corrupted.clone())
    x = corrupted["observation"]
    want = slow_ig(module, x, recorded["activations", SITE])
    torch.testing.assert_close(out["attribution", "value", "observation"], want[0])
    torch.testing.assert_close(out["attribution", "logit0", "observation"], want[1])
    # the policy's own outputs are those of the patched network
    heads = patched_heads(module, x, recorded["activations", SITE]).detach()
    torch.testing.assert_close(out["state_value"][..., 0], heads[0])


def test_a_patch_that_fits_no_copy_of_the_batch_is_refused_with_the_reason():
    module = actor_critic_mlp()
    source = torch.zeros(4, 32)
    with pytest.raises(ValueError, match=r"patch source has shape \(4, 32\).*\(6, 32\).*multiple"):
        thr.Intervened(module, {SITE: Patch(source)})(
            TensorDict(observation=torch.randn(6, OBS), batch_size=[6])
        )


def test_patch_layout_over_copies_is_copy_major():
    """(k * B, f) activations hold copy i of sample b at row i * B + b (the engine's
    ``(k, *batch) -> (k * B,)`` reshape): each row gets sample b's patch."""
    source = torch.arange(6.0).reshape(3, 2)
    out = Patch(source)(torch.zeros(12, 2), None, "h")
    torch.testing.assert_close(out, source.repeat(4, 1))
    grid = torch.arange(12.0).reshape(2, 3, 2)  # (T, B, f) recorded, flattened activations
    torch.testing.assert_close(
        Patch(grid)(torch.zeros(18, 2), None, "h"), grid.reshape(6, 2).repeat(3, 1)
    )
    torch.testing.assert_close(
        Patch(source)(torch.zeros(5, 3, 2), None, "h"), source.expand(5, 3, 2)
    )
