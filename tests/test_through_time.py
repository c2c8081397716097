"""Attribution through time: whole trajectories read by a recurrent module in recurrent mode
(``Attributed(..., sample_dims=1)``), each step's target attributed to the observations of
every step, checked against a slow per-step autograd loop, causality, and the step-wise
attribution of the same policy."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from test_recurrent import STATES, recurrent_dqn
from torchrl.modules import MLP, QValueModule, set_recurrent_mode

import tdhook_rl as thr
from tdhook_rl import viz
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.targets import ActionValue, Index

STEPS = 10


def trajectories(kind: str):
    """Three CartPole trajectories of the recurrent DQN, stacked [3, STEPS], and the policy."""
    env, policy = recurrent_dqn(kind)
    runs = []
    for seed in range(3):
        env.set_seed(seed)
        runs.append(env.rollout(STEPS, policy, break_when_any_done=False))
    return policy, torch.stack(runs)


def step_targets() -> dict:
    return {f"q{t}": ActionValue(index=t) for t in range(STEPS)}


def slow_jacobian(policy, batch: TensorDict, kind: str) -> torch.Tensor:
    """d Q_t(taken a_t) / d obs_s for every trajectory, t and s: [T, B, T, F], one backward
    per trajectory and step."""
    keys = ("observation", "is_init", *STATES[kind])
    rows = []
    for t in range(STEPS):
        per_run = []
        for b in range(batch.shape[0]):
            td = batch[b : b + 1].select(*keys).clone()
            x = td["observation"].requires_grad_()
            with set_recurrent_mode(True):
                q = policy(td)["action_value"][0, t]
            taken = batch["action"][b, t]
            per_run.append(torch.autograd.grad((q * taken).sum(), x)[0][0])
        rows.append(torch.stack(per_run))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", list(STATES))
def test_saliency_through_time_matches_a_slow_loop(kind):
    policy, batch = trajectories(kind)
    explained = thr.Attributed(
        policy,
        Saliency(abs=False),
        inputs=["observation"],
        targets=step_targets(),
        sample_dims=1,
    )
    with set_recurrent_mode(True):
        out = explained(batch.clone())
    got = torch.stack([out["attribution", f"q{t}", "observation"] for t in range(STEPS)])
    assert got.shape == (STEPS, 3, STEPS, 4)
    torch.testing.assert_close(got, slow_jacobian(policy, batch, kind))
    # causality: step t's value does not depend on later observations
    for t in range(STEPS - 1):
        assert got[t, :, t + 1 :].abs().max() == 0
    # memory: it does depend on earlier ones
    assert got[STEPS - 1, :, : STEPS - 1].abs().max() > 1e-4
    # the diagonal is what the step-wise wrapper gives (memory held fixed)
    stepwise = thr.Attributed(
        policy, Saliency(abs=False), inputs=["observation"], targets={"q": ActionValue()}
    )(batch.clone())
    diagonal = torch.stack([got[t, :, t] for t in range(STEPS)], 1)
    torch.testing.assert_close(diagonal, stepwise["attribution", "q", "observation"])


def test_ig_through_time_against_captum_and_completeness():
    policy, batch = trajectories("gru")
    t = STEPS - 1
    explained = thr.Attributed(
        policy,
        IntegratedGradients(n_steps=32),
        inputs=["observation"],
        targets={"last": ActionValue(index=t)},
        sample_dims=1,
    )
    with set_recurrent_mode(True):
        out = explained(batch.clone())
    got = out["attribution", "last", "observation"]  # [B, T, F]
    context = batch.select("is_init", *STATES["gru"])
    taken = batch["action"][:, t]

    def q_last(x):  # captum's forward: whole trajectories in, one Q per trajectory
        k = x.shape[0] // 3
        td = context.expand(k, *context.shape).reshape(-1, STEPS).clone()
        td["observation"] = x
        with set_recurrent_mode(True):
            q = policy(td)["action_value"][:, t]
        return (q * taken.repeat(k, 1)).sum(-1)

    want = CIntegratedGradients(q_last).attribute(batch["observation"], n_steps=32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    gap = q_last(batch["observation"]) - q_last(torch.zeros_like(batch["observation"]))
    torch.testing.assert_close(got.sum((-1, -2)), gap.detach(), atol=1e-4, rtol=1e-3)
    delta = out["attribution", "last", "completeness_delta"]
    assert delta.shape == (3, STEPS)  # one per trajectory, repeated along the steps
    assert torch.equal(delta, delta[:, :1].expand(3, STEPS))


def test_sample_dims_on_a_feed_forward_policy_is_block_diagonal():
    torch.manual_seed(0)
    net = MLP(in_features=4, out_features=3, num_cells=[16])
    policy = TensorDictSequential(
        TensorDictModule(net, ["observation"], ["action_value"]),
        QValueModule(action_space="one_hot"),
    )
    td = TensorDict(observation=torch.randn(2, 5, 4), batch_size=[2, 5])
    targets = {f"v{t}": Index("action_value", (t, 1)) for t in range(5)}
    out = thr.Attributed(
        policy, Saliency(abs=False), inputs=["observation"], targets=targets, sample_dims=1
    )(td.clone())
    flat = thr.Attributed(
        policy, Saliency(abs=False), inputs=["observation"], targets={"v": Index("action_value", 1)}
    )(td.clone())
    for t in range(5):
        a = out["attribution", f"v{t}", "observation"]
        torch.testing.assert_close(a[:, t], flat["attribution", "v", "observation"][:, t])
        others = [s for s in range(5) if s != t]
        assert a[:, others].abs().max() == 0


def test_sample_dims_errors():
    module = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
    with pytest.raises(ValueError, match="sample_dims"):
        thr.Attributed(
            module, "saliency", inputs=["observation"], targets="state_value", sample_dims=-1
        )
    explained = thr.Attributed(
        module, "saliency", inputs=["observation"], targets="state_value", sample_dims=2
    )
    with pytest.raises(ValueError, match="sample_dims=2"):
        explained(TensorDict(observation=torch.randn(3, 4), batch_size=[3]))
    per_step = thr.Attributed(
        module, "saliency", inputs=["observation"], targets="state_value", sample_dims=1
    )
    with pytest.raises(ValueError, match="one scalar per sample"):
        per_step(TensorDict(observation=torch.randn(3, 5, 4), batch_size=[3, 5]))


def test_memory_map_rows_are_the_per_step_sums(tmp_path):
    policy, batch = trajectories("lstm")
    heads = list(step_targets())
    explained = thr.Attributed(
        policy, Saliency(abs=False), inputs=["observation"], targets=step_targets(), sample_dims=1
    )
    with set_recurrent_mode(True):
        out = explained(batch.clone())
    fig = viz.memory_map(out[0], heads)
    fig.savefig(tmp_path / "memory.png")
    shown = torch.as_tensor(fig.axes[0].images[0].get_array())
    for t, head in enumerate(heads):  # row t: target t's attribution summed over features
        torch.testing.assert_close(shown[t], out["attribution", head, "observation"][0].sum(-1))
    assert torch.triu(shown, diagonal=1).abs().max() == 0
    low, high = fig.axes[0].images[0].get_clim()
    assert low == -high
