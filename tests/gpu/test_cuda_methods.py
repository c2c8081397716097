"""The CUDA path of the phase-two methods: perturbation attribution, hidden sites, GradCAM,
attribution patching and the faithfulness metrics, each against the same computation on the CPU.

Skipped where no CUDA device is present (CI); ``TDHOOK_RL_GPU_TESTS_ON=cpu`` dry-runs them on
the CPU (checks the tests themselves). Run on a GPU machine with ``python -m pytest tests/gpu``.
"""

from __future__ import annotations

import os

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.attribution import (
    ExactShapley,
    FeatureAblation,
    GradCAM,
    IntegratedGradients,
    KernelShap,
    Occlusion,
    ShapleyValueSampling,
)
from tdhook_rl.metrics import deletion_curve
from tdhook_rl.targets import ActionLoc, Index, Neuron

GPU = os.environ.get("TDHOOK_RL_GPU_TESTS_ON", "cuda")
pytestmark = pytest.mark.skipif(
    GPU == "cuda" and not torch.cuda.is_available(), reason="no CUDA device here"
)
HEADS = {"policy": ActionLoc(), "value": "state_value"}
H1 = "module.0.module.0.module.0.1"  # the actor's first hidden layer (its tanh)


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-12)
    error = (actual - expected).abs()
    assert (error <= rel * scale + 1e-3 * expected.abs()).all(), error.max() / scale


def _pendulum_batch(device: str, n: int = 48) -> TensorDict:
    obs = torch.randn(n, 9, generator=torch.Generator().manual_seed(0)).double()
    return TensorDict(observation=obs, batch_size=[n]).to(device)


def _on_both(method, inputs=("observation",), targets=HEADS) -> tuple[TensorDict, TensorDict]:
    """The shipped double-pendulum agent (float64) explained on the CPU and on the GPU."""
    outs = []
    for device in ("cpu", GPU):
        agent = agents.load("double_pendulum", device=device)
        agent.actor_critic.double()
        explained = thr.Attributed(agent.actor_critic, method, inputs=list(inputs), targets=targets)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            outs.append(explained(_pendulum_batch(device)))
    return outs[0], outs[1]


C4_TARGETS = {"win": Index("win_logits", 0), "value": "state_value"}


def _connect_four_on_both(method, inputs, games: int, plies: int):
    """The shipped Connect Four agent explained on the CPU and on the GPU, on positions of
    its own games."""
    from tdhook_rl.envs.connect_four import ConnectFourEnv

    env = ConnectFourEnv(batch_size=[games])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        positions = env.rollout(plies, agents.load("connect_four"), break_when_any_done=False)
    flat = positions.exclude("next").reshape(-1)
    outs = []
    for device in ("cpu", GPU):
        explained = thr.Attributed(
            agents.load("connect_four", device=device), method, inputs=inputs, targets=C4_TARGETS
        )
        outs.append(explained(flat.clone().to(device)))
    return outs[0], outs[1]


@pytest.mark.parametrize(
    "method",
    [
        FeatureAblation(),
        ExactShapley(),
        Occlusion(window=3, strides=2),
        ShapleyValueSampling(n_samples=4, seed=1),
        KernelShap(n_samples=32, seed=1),
    ],
    ids=["feature_ablation", "exact_shapley", "occlusion", "shapley_sampling", "kernel_shap"],
)
def test_perturbation_methods_on_cuda_match_cpu(method):
    cpu, gpu = _on_both(method)
    for head in HEADS:
        result = gpu["attribution", head, "observation"]
        assert result.device.type == GPU
        if isinstance(method, ShapleyValueSampling | KernelShap):
            # sampled coalitions come from per-device generators: the same seed gives the
            # same draws on one device, not across devices: only where and finite
            assert torch.isfinite(result).all()
            continue
        _close(result, cpu["attribution", head, "observation"])


def test_hidden_site_ig_and_neuron_targets_on_cuda_match_cpu():
    targets = {**HEADS, "unit3": Neuron(H1, 3)}
    cpu, gpu = _on_both(IntegratedGradients(16), inputs=("observation", H1), targets=targets)
    for head in targets:
        for name in ("observation", H1):
            if head == "unit3" and name == H1:
                continue  # a unit's attribution to its own layer: not defined as an input
            _close(gpu["attribution", head, name], cpu["attribution", head, name])


def test_gradcam_on_the_connect_four_agent_on_cuda_matches_cpu():
    site = "module.0.module.conv"
    cpu, gpu = _connect_four_on_both(GradCAM(size=(6, 7)), [site], games=64, plies=6)
    for head in C4_TARGETS:
        _close(gpu["attribution", head, site], cpu["attribution", head, site])


def test_attribution_patching_on_cuda_matches_cpu():
    results = []
    for device in ("cpu", GPU):
        agent = agents.load("double_pendulum", device=device)
        agent.actor_critic.double()
        clean = _pendulum_batch(device, 32)
        corrupted = clean.apply(lambda x: x.flip(0))
        results.append(
            thr.attribution_patching(agent.actor_critic, clean, corrupted, HEADS, per_unit=True)
        )
    cpu, gpu = results
    _close(gpu.effects, cpu.effects)
    for site, units in cpu.units.items():
        _close(gpu.units[site], units)


def test_deletion_curve_on_cuda_matches_cpu():
    curves = []
    for device in ("cpu", GPU):
        agent = agents.load("double_pendulum", device=device)
        agent.actor_critic.double()
        explained = thr.Attributed(
            agent.actor_critic, IntegratedGradients(16), inputs=["observation"], targets=HEADS
        )
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            td = explained(_pendulum_batch(device))
            curves.append(deletion_curve(explained, td, n_random=4, seed=0))
    cpu, gpu = curves
    for head in HEADS:
        for field in ("values", "random", "auc", "random_auc"):
            _close(getattr(gpu, field)[head], getattr(cpu, field)[head])


def test_lrp_conductance_and_guided_gradcam_on_cuda_match_cpu():
    from tdhook_rl.attribution import Conductance, GuidedGradCAM
    from tdhook_rl.attribution.lrp import LRP, EpsilonPlus

    lrp_cpu, lrp_gpu = _on_both(LRP(EpsilonPlus()), inputs=("observation", H1))
    cond_cpu, cond_gpu = _on_both(Conductance(n_steps=16), inputs=(H1,), targets={"p": ActionLoc()})
    for head in HEADS:
        for name in ("observation", H1):
            _close(lrp_gpu["attribution", head, name], lrp_cpu["attribution", head, name])
    _close(cond_gpu["attribution", "p", H1], cond_cpu["attribution", "p", H1])

    guided = GuidedGradCAM("module.0.module.conv")
    cpu, gpu = _connect_four_on_both(guided, ["observation"], games=32, plies=4)
    for head in C4_TARGETS:
        _close(gpu["attribution", head, "observation"], cpu["attribution", head, "observation"])
