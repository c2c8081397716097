"""Recurrent policies (TorchRL's LSTMModule / GRUModule) inside ``env.rollout``: the
attribution of one step is to that step's inputs given the carried recurrent state, and the
state itself can be attributed too."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.envs import InitTracker, TransformedEnv
from torchrl.modules import GRUModule, LSTMModule, QValueModule

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.targets import ActionValue

gym = pytest.importorskip("torchrl.envs.libs.gym")
HIDDEN = 8
STATES = {"lstm": ("recurrent_state_h", "recurrent_state_c"), "gru": ("recurrent_state",)}


def recurrent_dqn(kind: str) -> tuple[TransformedEnv, TensorDictSequential]:
    """CartPole with the primer of a one-layer LSTM/GRU, and a Q-network reading it."""
    torch.manual_seed(0)
    cls = LSTMModule if kind == "lstm" else GRUModule
    memory = cls(input_size=4, hidden_size=HIDDEN, in_key="observation", out_key="embed")
    env = TransformedEnv(gym.GymEnv("CartPole-v1"), InitTracker())
    env.append_transform(memory.make_tensordict_primer())
    env.set_seed(0)
    head = TensorDictModule(torch.nn.Linear(HIDDEN, 2), ["embed"], ["action_value"])
    return env, TensorDictSequential(memory, head, QValueModule(spec=env.action_spec))


def step_inputs(rollout: TensorDict, t: int, kind: str) -> TensorDict:
    """What the policy read at step ``t``: the observation, is_init and the carried state."""
    return rollout[t : t + 1].select("observation", "is_init", *STATES[kind]).clone()


def taken_q(policy, td: TensorDict, action: torch.Tensor) -> torch.Tensor:
    return (policy(td)["action_value"] * action).sum(-1)


@pytest.mark.parametrize("kind", list(STATES))
def test_saliency_in_a_recurrent_rollout_matches_per_step_autograd(kind):
    env, policy = recurrent_dqn(kind)
    plain = env.rollout(25, policy)
    env.set_seed(0)
    explained = thr.Attributed(
        policy, Saliency(abs=False), inputs=["observation"], targets={"q": ActionValue()}
    )
    rollout = env.rollout(25, explained)
    # the wrapper changed nothing the policy does: same actions, same carried memory
    assert torch.equal(plain["action"], rollout["action"])
    for key in STATES[kind]:
        torch.testing.assert_close(plain["next", key], rollout["next", key])
    want = []
    for t in range(rollout.shape[0]):
        td = step_inputs(rollout, t, kind)
        x = td["observation"].requires_grad_()
        q = taken_q(policy, td, rollout["action"][t])
        want.append(torch.autograd.grad(q.sum(), x)[0][0])
    torch.testing.assert_close(rollout["attribution", "q", "observation"], torch.stack(want))


@pytest.mark.parametrize("kind", list(STATES))
def test_ig_attributes_the_carried_state_too(kind):
    env, policy = recurrent_dqn(kind)
    state_key = STATES[kind][0]
    explained = thr.Attributed(
        policy,
        IntegratedGradients(n_steps=32),
        inputs=["observation", state_key],
        targets={"q": ActionValue()},
    )
    rollout = env.rollout(12, explained)
    obs, state = rollout["observation"], rollout[state_key]
    action = rollout["action"]
    other = {k: rollout[k] for k in STATES[kind][1:]}

    def q_of(x, h):  # captum's forward: the taken action's Q, the other state entries fixed
        k = x.shape[0] // obs.shape[0]
        td = TensorDict(
            observation=x,
            is_init=rollout["is_init"].repeat(k, 1),
            **{state_key: h},
            **{key: v.repeat(k, *[1] * (v.ndim - 1)) for key, v in other.items()},
            batch_size=x.shape[:1],
        )
        return taken_q(policy, td, action.repeat(k, 1))

    want_obs, want_state = CIntegratedGradients(q_of).attribute(
        (obs, state), n_steps=32, method="gausslegendre"
    )
    got_obs = rollout["attribution", "q", "observation"]
    got_state = rollout["attribution", "q", state_key]
    torch.testing.assert_close(got_obs, want_obs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_state, want_state, atol=1e-5, rtol=1e-4)
    # completeness over both inputs: Q(x, h) - Q(0, 0), the other state entries fixed
    zero = q_of(torch.zeros_like(obs), torch.zeros_like(state))
    total = got_obs.sum(-1) + got_state.flatten(1).sum(-1)
    torch.testing.assert_close(total, (q_of(obs, state) - zero).detach(), atol=1e-4, rtol=1e-3)
