"""Off-policy critics (SAC, TD3, DDPG): the Q-value Q(s, a) attributed to the observation and
the action together, on batches sampled from a TorchRL replay buffer filled by a Collector."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from torch.nn import Tanh
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.modules import MLP, ValueOperator

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients

from models import OBS, gaussian_actor, make_double_pendulum

ACTION = 1  # the double pendulum's action


def q_critic(seed: int = 0) -> ValueOperator:
    torch.manual_seed(seed)
    # TorchRL's MLP concatenates its inputs, as the SAC/TD3 examples' critics do
    net = MLP(in_features=OBS + ACTION, out_features=1, num_cells=[32, 32], activation_class=Tanh)
    return ValueOperator(net, in_keys=["observation", "action"])


def test_q_value_attributed_to_observation_and_action_on_replay_samples():
    env = make_double_pendulum()
    env.set_seed(0)
    actor = gaussian_actor("tanh_normal", action_dim=ACTION)
    collector = Collector(
        env, actor, frames_per_batch=64, total_frames=128, auto_register_policy_transforms=False
    )
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(256), batch_size=48)
    for batch in collector:
        buffer.extend(batch.reshape(-1))
    collector.shutdown()
    sample = buffer.sample()

    critic = q_critic()
    explained = thr.Attributed(
        critic,
        IntegratedGradients(n_steps=24),
        inputs=["observation", "action"],
        targets={"q": "state_action_value"},
    )
    out = explained(sample.clone())
    # the critic's own output is untouched
    torch.testing.assert_close(
        out["state_action_value"], critic(sample.clone())["state_action_value"]
    )

    def q(obs, action):  # captum's forward, one Q per row
        td = TensorDict(observation=obs, action=action, batch_size=obs.shape[:1])
        return critic(td)["state_action_value"].squeeze(-1)

    want_obs, want_action = CIntegratedGradients(q).attribute(
        (sample["observation"], sample["action"]), n_steps=24, method="gausslegendre"
    )
    got_obs, got_action = out["attribution", "q", "observation"], out["attribution", "q", "action"]
    torch.testing.assert_close(got_obs, want_obs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_action, want_action, atol=1e-5, rtol=1e-4)
    # completeness across both inputs: Q(s, a) - Q(0, 0)
    zero = q(torch.zeros_like(sample["observation"]), torch.zeros_like(sample["action"]))
    total = got_obs.sum(-1) + got_action.sum(-1)
    q_sa = q(sample["observation"], sample["action"])
    torch.testing.assert_close(total, (q_sa - zero).detach(), atol=1e-4, rtol=1e-3)
    delta = out["attribution", "q", "completeness_delta"]
    assert delta.abs().max() < 1e-3 * (q_sa - zero).abs().max() + 1e-5
