"""The CUDA path: attribution, recording, interventions, the batched environments and the
command on a GPU, each checked against the same computation on the CPU.

Skipped where no CUDA device is present (CI); run on a GPU machine with
``python -m pytest tests/gpu``.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.envs import Compose, TransformedEnv
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.attribution import IntegratedGradients, Saliency, SmoothGrad
from tdhook_rl.interventions import Ablate, Steer
from tdhook_rl.targets import ActionLogProb, Index

# TDHOOK_RL_GPU_TESTS_ON=cpu dry-runs these tests on the CPU (checks the tests themselves)
GPU = os.environ.get("TDHOOK_RL_GPU_TESTS_ON", "cuda")
pytestmark = pytest.mark.skipif(
    GPU == "cuda" and not torch.cuda.is_available(), reason="no CUDA device here"
)
BOTH_HEADS = {"policy": ActionLogProb(), "value": "state_value"}


def _mujoco_torch_missing() -> str | None:
    try:
        import mujoco_torch  # noqa: F401
    except Exception as err:
        return f"mujoco-torch is not usable here ({type(err).__name__}: {err})"
    return None


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to float32 reordering: relative to the attribution scale, and elementwise;
    in float64, gradients below 1e-10 count as zero (the saturated critic's saliency is
    ~1e-14 on one device and exactly 0 on the other: tanh rounds to 1 differently)."""
    floor = 1e-10 if expected.dtype == torch.float64 else 0.0
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    scale = expected.abs().max().clamp_min(1e-12)
    assert actual.shape == expected.shape
    bound = floor + rel * scale + 1e-3 * expected.abs()
    assert ((actual - expected).abs() <= bound).all(), (actual - expected).abs().max() / scale


def _observations(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 9, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strategy", ["auto", "reverse", "forward", "replicate"])
@pytest.mark.parametrize(
    "method",
    [Saliency(abs=False), IntegratedGradients(n_steps=16), IntegratedGradients(16, chunk_size=5)],
    ids=["saliency", "ig16", "ig16-chunked"],
)
def test_attributed_on_cuda_matches_cpu(method, strategy):
    # float64: the trained critic's tanh units are saturated (|a| > 0.999), where float32
    # gradients are rounding noise that differs between CPU and GPU kernels (seen: 2x)
    cpu_agent = agents.load("double_pendulum")
    gpu_agent = agents.load("double_pendulum", device=GPU)
    for agent in (cpu_agent, gpu_agent):
        agent.actor_critic.double()
    obs = _observations(64).double()
    # the actor's TanhNormal has no forward-mode AD: forward mode runs on the critic alone
    forward = strategy == "forward"
    targets = {"value": "state_value"} if forward else BOTH_HEADS
    results = []
    for agent, device in ((cpu_agent, "cpu"), (gpu_agent, GPU)):
        explained = thr.Attributed(
            agent.critic if forward else agent.actor_critic,
            method,
            inputs=["observation"],
            targets=targets,
            strategy=strategy,
        )
        td = TensorDict(observation=obs.to(device), batch_size=[64], device=device)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            results.append(explained(td))
    cpu, gpu = results
    assert gpu["attribution", "value", "observation"].device.type == GPU
    assert gpu["attribution", "value", "observation"].dtype == torch.float64
    if not forward:
        _close(gpu["action"], cpu["action"])
    for head in targets:
        _close(gpu["attribution", head, "observation"], cpu["attribution", head, "observation"])


def test_smoothgrad_on_cuda_is_seeded_and_finite():
    agent = agents.load("double_pendulum", device=GPU)
    td = TensorDict(observation=_observations(32).to(GPU), batch_size=[32], device=GPU)

    def smoothgrad(seed: int) -> torch.Tensor:
        method = SmoothGrad(Saliency(abs=False), n_samples=8, stdev=0.1, seed=seed)
        explained = thr.Attributed(
            agent.actor_critic, method, inputs=["observation"], targets=BOTH_HEADS
        )
        return explained(td.clone())["attribution", "value", "observation"]

    a, b, other = smoothgrad(3), smoothgrad(3), smoothgrad(4)
    assert a.device.type == GPU and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)  # the noise comes from the method's seeded generator
    assert not torch.allclose(a, other)


def test_recorded_and_intervened_on_cuda_match_cpu():
    sites = ["module.0.module.0.1", "module.0.module.0.3"]
    outs = []
    for device in ("cpu", GPU):
        agent = agents.load("double_pendulum", device=device)
        td = TensorDict(observation=_observations(50, 1).to(device), batch_size=[50])
        td = td.to(device)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            recorded = thr.Recorded(agent.actor, {"h1": sites[0], "h2": sites[1]})(td.clone())
            packed = thr.Recorded(agent.actor, {"h1": sites[0], "h2": sites[1]}, packed=True)
            unpacked = packed.unpack(packed(td.clone()))
            for site in ("h1", "h2"):  # the packed layout on this device, split back per site
                _close(unpacked["activations", site], recorded["activations", site])
            ablated = thr.Intervened(agent.actor, {sites[0]: Ablate(units=range(16))})(td.clone())
            vector = torch.linspace(-1, 1, 64, device=device)
            steered = thr.Intervened(agent.actor, {sites[1]: Steer(vector, scale=3.0)})(td.clone())
        outs.append((recorded, ablated, steered))
    (rec_c, abl_c, st_c), (rec_g, abl_g, st_g) = outs
    for site in ("h1", "h2"):
        assert rec_g["activations", site].device.type == GPU
        _close(rec_g["activations", site], rec_c["activations", site])
    _close(abl_g["loc"], abl_c["loc"])
    _close(st_g["loc"], st_c["loc"])
    assert not torch.allclose(abl_c["loc"], rec_c["loc"])  # the ablation did something


def test_multi_agent_and_q_value_targets_on_cuda_match_cpu():
    """Per-agent targets of a MAPPO actor-critic with unshared parameters (each agent's
    network under vmap), its recorded per-agent layer, and a DQN's taken-action Q-value."""
    from torchrl.data import OneHot
    from torchrl.modules import MLP, QValueActor

    from tdhook_rl.targets import ActionValue

    from test_multi_agent import N_AGENTS, OBS, agents_td, mappo

    obs = torch.randn(40, N_AGENTS, OBS, generator=torch.Generator().manual_seed(2))
    targets = {f"policy {i}": ActionLogProb(index=i) for i in range(N_AGENTS)}
    targets |= {f"value {i}": Index(("agents", "state_value"), (i, 0)) for i in range(N_AGENTS)}
    site = "module.0.module.0.module.0._empty_net.1"
    outs = []
    for device in ("cpu", GPU):
        actor, critic = mappo(share_params=False)
        module = TensorDictSequential(actor, critic).to(device)
        explained = thr.Attributed(
            thr.Recorded(module, {"h1": site}),
            IntegratedGradients(n_steps=16),
            inputs=[("agents", "observation")],
            targets=targets,
        )
        torch.manual_seed(0)
        q_actor = QValueActor(
            MLP(in_features=9, out_features=4, num_cells=[32]), spec=OneHot(4)
        ).to(device)
        q = thr.Attributed(
            q_actor, Saliency(abs=False), inputs=["observation"], targets={"q": ActionValue()}
        )
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            out = explained(agents_td(obs).to(device))
            q_out = q(TensorDict(observation=_observations(40, 3), batch_size=[40]).to(device))
        outs.append((out, q_out))
    (cpu, q_cpu), (gpu, q_gpu) = outs
    assert gpu["activations", "h1"].device.type == GPU
    assert gpu["activations", "h1"].shape == (40, N_AGENTS, 16)
    _close(gpu["activations", "h1"], cpu["activations", "h1"])
    for name in targets:
        _close(
            gpu["attribution", name, "agents", "observation"],
            cpu["attribution", name, "agents", "observation"],
        )
    _close(q_gpu["attribution", "q", "observation"], q_cpu["attribution", "q", "observation"])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_policy_in_eval_mode_on_cuda_matches_cpu(kind):
    """cuDNN's RNN kernels have no backward in eval mode: the attribution pass must still run
    (step by step, and through time on whole trajectories), equal to the CPU."""
    from test_recurrent import recurrent_dqn
    from torchrl.modules import set_recurrent_mode

    from tdhook_rl.targets import ActionValue

    env, policy = recurrent_dqn(kind)
    policy.eval()
    env.set_seed(0)
    batch = torch.stack([env.rollout(8, policy, break_when_any_done=False) for _ in range(2)])
    outs = []
    for device in ("cpu", GPU):
        module = policy.to(device)
        data = batch.to(device)
        step = thr.Attributed(
            module, Saliency(abs=False), inputs=["observation"], targets={"q": ActionValue()}
        )(data.clone())
        through = thr.Attributed(
            module,
            IntegratedGradients(n_steps=16),
            inputs=["observation"],
            targets={f"q{t}": ActionValue(index=t) for t in range(8)},
            sample_dims=1,
        )
        with set_recurrent_mode(True):
            whole = through(data.clone())
        outs.append((step, whole))
    (step_c, whole_c), (step_g, whole_g) = outs
    _close(step_g["attribution", "q", "observation"], step_c["attribution", "q", "observation"])
    for t in range(8):
        key = ("attribution", f"q{t}", "observation")
        _close(whole_g[key], whole_c[key])


@pytest.mark.skipif(GPU == "cpu", reason="needs two devices")
def test_intervention_on_the_wrong_device_names_the_site():
    agent = agents.load("double_pendulum", device=GPU)
    site = "module.0.module.0.1"
    bad = thr.Intervened(agent.actor, {site: Steer(torch.ones(64), scale=1.0)})
    td = TensorDict(observation=_observations(4).to(GPU), batch_size=[4], device=GPU)
    with pytest.raises(Exception, match=r"device|cpu|cuda"):
        bad(td)


def test_connect_four_on_cuda_rollout_attributed_and_matches_cpu():
    from tdhook_rl.envs.connect_four import ConnectFourEnv

    env = ConnectFourEnv(batch_size=[256], device=GPU)
    check_env_specs(env)
    gpu_agent = agents.load("connect_four", device=GPU)
    targets = {"move": ActionLogProb(), "win": Index("win_logits", 0), "value": "state_value"}
    explained = thr.Attributed(
        gpu_agent, IntegratedGradients(8), inputs=["observation"], targets=targets
    )
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(20, explained, break_when_any_done=False)
    assert rollout.device.type == GPU and rollout.batch_size == (256, 20)
    assert rollout["action_mask"].gather(-1, rollout["action"].unsqueeze(-1)).all()
    # the same positions attributed on the CPU
    flat = rollout.exclude("next", "attribution").reshape(-1)[:512]
    cpu_explained = thr.Attributed(
        agents.load("connect_four"), IntegratedGradients(8), inputs=["observation"], targets=targets
    )
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        cpu = cpu_explained(flat.cpu())
    for name in targets:
        gpu_a = rollout["attribution", name, "observation"].reshape(-1, 3, 6, 7)[:512]
        _close(gpu_a, cpu["attribution", name, "observation"])


def test_chess_agent_on_cuda_matches_cpu():
    pytest.importorskip("chess")
    from tdhook_rl.envs.chess import encode_fen

    fens = [
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
        "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3",
    ]
    td = torch.stack([encode_fen(f) for f in fens])
    td["observation"] = td["observation"].double()  # no TF32 convolutions in the comparison
    targets = {"move": ActionLogProb(), "win": Index("win_logits", 0)}
    outs = []
    for device in ("cpu", GPU):
        agent = agents.load("chess", device=device).double()
        explained = thr.Attributed(
            agent, IntegratedGradients(8), inputs=["observation"], targets=targets
        )
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            outs.append(explained(td.clone().to(device)))
    assert torch.equal(outs[0]["action"], outs[1]["action"].cpu())
    for name in targets:
        _close(
            outs[1]["attribution", name, "observation"], outs[0]["attribution", name, "observation"]
        )


@pytest.mark.skipif(_mujoco_torch_missing() is not None, reason=str(_mujoco_torch_missing()))
def test_mujoco_torch_double_pendulum_on_cuda():
    from tdhook_rl.envs.double_pendulum import observation_norm_transforms
    from tdhook_rl.envs.double_pendulum_gpu import InvertedDoublePendulumEnv

    n, steps = 16, 8
    g = torch.Generator().manual_seed(0)
    qpos = ((torch.rand(n, 3, generator=g) - 0.5) * 0.2).double()
    qvel = (torch.randn(n, 3, generator=g) * 0.1).double()
    actions = torch.rand(steps, n, 1, generator=g) * 2 - 1
    trajectories = []
    for device in ("cpu", GPU):
        env = InvertedDoublePendulumEnv(num_envs=n, device=device, seed=0)
        if device == GPU:
            check_env_specs(env)
        td = env.reset(TensorDict(qpos=qpos, qvel=qvel, batch_size=[n]).to(device), set_state=True)
        obs = []
        for action in actions:
            td["action"] = action.to(device, env.dtype)
            td = env.step(td)["next"]
            obs.append(td["observation"].cpu())
        trajectories.append(torch.stack(obs))
    torch.testing.assert_close(trajectories[1], trajectories[0], atol=1e-4, rtol=1e-4)
    # the shipped agent, attributed, balances on the GPU copies
    agent = agents.load("double_pendulum", device=GPU)
    base = InvertedDoublePendulumEnv(num_envs=64, device=GPU, seed=0)
    env = TransformedEnv(base, Compose(*observation_norm_transforms(agent.obs_norm, GPU)))
    explained = thr.Attributed(
        agent.actor_critic, IntegratedGradients(8), inputs=["observation"], targets=BOTH_HEADS
    )
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(20, explained, break_when_any_done=False)
    assert rollout["attribution", "policy", "observation"].device.type == GPU
    assert not rollout["next", "terminated"].any()
    assert rollout["next", "reward"].mean() > 9.0


def test_explain_command_on_cuda(tmp_path):
    from tdhook_rl.cli import main

    out = tmp_path / "report"
    code = main(
        [
            "explain", "--device", GPU, "--steps", "40", "--envs", "2", "--episodes", "2",
            "--groups", "2", "--ablation-steps", "30", "--n-steps", "8", "--quiet",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transitions"] == 80
    assert (out / "report.html").exists()


@pytest.mark.parametrize(
    "agent, extra",
    [("chess", ["--positions", "2"]), ("connect_four", ["--games", "1", "--positions", "2"])],
)
def test_board_game_explain_on_cuda(tmp_path, agent, extra):
    if agent == "chess":
        pytest.importorskip("chess")
    from tdhook_rl.cli import main

    out = tmp_path / agent
    flags = ["--agent", agent, "--device", GPU, "--n-steps", "8", "--quiet", *extra]
    code = main(["explain", *flags, "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary and (out / "report.html").exists()
