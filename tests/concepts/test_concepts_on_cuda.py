"""The concepts on a GPU: SAE training from CUDA tensors and from a CPU replay buffer, steering,
TwoNN and CKA, each checked against the CPU.

Skipped where no CUDA device is present; ``TDHOOK_RL_GPU_TESTS_ON=cpu`` dry-runs them on the
CPU (as ``tests/gpu`` does).
"""

from __future__ import annotations

import os

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.concepts import (
    SAEFeature,
    SAETrainer,
    SparseAutoencoder,
    feature_dashboard,
    linear_cka,
    sae_metrics,
    twonn,
)
from tdhook_rl.concepts.tcav import tcav_scores

GPU = os.environ.get("TDHOOK_RL_GPU_TESTS_ON", "cuda")
pytestmark = pytest.mark.skipif(
    GPU == "cuda" and not torch.cuda.is_available(), reason="no CUDA device here"
)


def _planted(n: int = 3000):
    g = torch.Generator().manual_seed(0)
    dictionary = torch.randn(16, 24, generator=g)
    dictionary /= dictionary.norm(dim=0)
    codes = (torch.rand(n, 24, generator=g) < 0.08) * (0.5 + torch.rand(n, 24, generator=g))
    return codes @ dictionary.T + 0.01 * torch.randn(n, 16, generator=g), dictionary


def test_sae_trains_on_the_gpu_from_a_tensor_and_from_a_cpu_buffer():
    x, dictionary = _planted()
    sae = SparseAutoencoder(16, 48, kind="topk", k=3, seed=0).to(GPU)
    SAETrainer(sae, lr=1e-2, progress=False).fit(x.to(GPU), batch_size=256, steps=600)
    assert sae.decoder.device.type == torch.device(GPU).type
    cos = (dictionary.to(GPU).T @ sae.decoder.detach()).max(1).values
    assert (cos > 0.9).float().mean() >= 0.9
    metrics = sae_metrics(sae, x.to(GPU))
    assert metrics["fve"] > 0.8

    rb = ReplayBuffer(storage=LazyTensorStorage(3000))  # on the CPU; batches go to the SAE
    rb.extend(TensorDict(h=x, batch_size=[3000]))
    again = SparseAutoencoder(16, 48, kind="relu", l1=0.05, seed=0).to(GPU)
    SAETrainer(again, lr=1e-2, progress=False).fit(rb, "h", batch_size=256, steps=200)
    assert sae_metrics(again, rb, "h")["n"] == 3000
    board = feature_dashboard(again, rb, "h", top=3)
    assert board.top_values.device.type == "cpu" and board.histogram.shape == (48, 20)


def test_steering_and_tcav_on_the_gpu_match_the_cpu():
    agent = agents.load("double_pendulum", device=GPU)
    cpu_agent = agents.load("double_pendulum")
    sae = SparseAutoencoder(64, 32, seed=0)
    site = "module.0.module.0.3"
    td = TensorDict(observation=torch.randn(8, 9), batch_size=[8])
    steer = lambda s: {site: SAEFeature(s, 3, alpha=1.0)}  # noqa: E731
    cpu = thr.Intervened(cpu_agent.actor, steer(sae))(td.clone())["loc"]
    gpu_sae = SparseAutoencoder(64, 32, seed=0).to(GPU)
    gpu = thr.Intervened(agent.actor, steer(gpu_sae))(td.to(GPU))["loc"]
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    directions = torch.randn(4, 64)
    scores_cpu = tcav_scores(cpu_agent.actor, td, site, directions, {"loc": "loc"})
    scores_gpu = tcav_scores(agent.actor, td.to(GPU), site, directions.to(GPU), {"loc": "loc"})
    torch.testing.assert_close(scores_gpu.cpu(), scores_cpu)


def test_geometry_on_the_gpu_matches_the_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g) @ torch.randn(3, 12, generator=g)
    y = torch.tanh(x @ torch.randn(12, 6, generator=g))
    torch.testing.assert_close(twonn(x.to(GPU)).cpu(), twonn(x))
    for debiased in (False, True):
        got = linear_cka(x.to(GPU), y.to(GPU), debiased=debiased).cpu()
        torch.testing.assert_close(got, linear_cka(x, y, debiased=debiased))
