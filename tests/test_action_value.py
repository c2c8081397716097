"""ActionValue: the Q-value of the action actually taken, for TorchRL's value-based actors
(QValueActor, with and without epsilon-greedy exploration), against captum with per-sample
targets."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from captum.attr import Saliency as CSaliency
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.data import Categorical, OneHot
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, EGreedyModule, QValueActor

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.targets import ActionLogProb, ActionValue

OBS, N_ACTIONS, BATCH = 5, 4, 32
SPECS = {"one_hot": lambda: OneHot(N_ACTIONS), "categorical": lambda: Categorical(N_ACTIONS)}


def dqn(spec_name: str, seed: int = 0) -> tuple[torch.nn.Module, TensorDictSequential]:
    """A Q-network and the epsilon-greedy policy over it (eps = 1: every action random)."""
    torch.manual_seed(seed)
    net = MLP(
        in_features=OBS, out_features=N_ACTIONS, num_cells=[32], activation_class=torch.nn.Tanh
    )
    actor = QValueActor(net, in_keys=["observation"], spec=SPECS[spec_name]())
    return net, TensorDictSequential(actor, EGreedyModule(SPECS[spec_name](), eps_init=1.0))


def taken_index(action: torch.Tensor) -> torch.Tensor:
    return action.argmax(-1) if action.ndim == 2 else action


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("method", ["saliency", "ig"])
def test_action_value_matches_captum_with_the_taken_actions(spec_name, method):
    net, policy = dqn(spec_name)
    td = TensorDict(observation=torch.randn(BATCH, OBS), batch_size=[BATCH])
    ours = Saliency(abs=False) if method == "saliency" else IntegratedGradients(n_steps=24)
    explained = thr.Attributed(
        policy,
        ours,
        inputs=["observation"],
        targets={"taken": ActionValue(), "greedy": "chosen_action_value"},
    )
    with set_exploration_type(ExplorationType.RANDOM):
        out = explained(td.clone())
    taken = taken_index(out["action"])
    greedy = net(td["observation"]).argmax(-1)
    differs = taken != greedy
    assert differs.sum() >= 5, "eps=1 exploration should take non-greedy actions"

    if method == "saliency":
        reference = CSaliency(net).attribute(td["observation"], target=taken.tolist(), abs=False)
    else:
        reference = CIntegratedGradients(net).attribute(
            td["observation"], target=taken.tolist(), n_steps=24, method="gausslegendre"
        )
    got = out["attribution", "taken", "observation"]
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)
    # where exploration took another action, the greedy value's attribution is another one
    greedy_attr = out["attribution", "greedy", "observation"]
    assert (greedy_attr[differs] - got[differs]).abs().amax() > 1e-3
    if method == "ig":  # completeness: sum of attributions = Q(x, a) - Q(0, a)
        q = net(td["observation"]).gather(-1, taken[:, None]).squeeze(-1)
        q0 = net(torch.zeros(BATCH, OBS)).gather(-1, taken[:, None]).squeeze(-1)
        torch.testing.assert_close(got.sum(-1), (q - q0).detach(), atol=1e-4, rtol=1e-4)


def test_action_value_in_a_rollout_on_cartpole():
    gym = pytest.importorskip("torchrl.envs.libs.gym")
    env = gym.GymEnv("CartPole-v1")
    env.set_seed(0)
    torch.manual_seed(0)
    net = MLP(in_features=4, out_features=2, num_cells=[16])
    actor = QValueActor(net, in_keys=["observation"], spec=env.action_spec)
    policy = TensorDictSequential(actor, EGreedyModule(env.action_spec, eps_init=0.5))
    explained = thr.Attributed(
        policy, Saliency(abs=False), inputs=["observation"], targets={"q": ActionValue()}
    )
    with set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(40, explained)
    taken = taken_index(rollout["action"])
    want = CSaliency(net).attribute(rollout["observation"], target=taken.tolist(), abs=False)
    torch.testing.assert_close(rollout["attribution", "q", "observation"], want)


def test_action_value_takes_the_keys_of_the_q_module():
    torch.manual_seed(0)
    net = MLP(in_features=OBS, out_features=N_ACTIONS, num_cells=[8])
    actor = QValueActor(
        net,
        in_keys=["observation"],
        spec=Categorical(N_ACTIONS),
        action_value_key="q_values",
    )
    bound = ActionValue().bind(actor)
    assert (bound.value_key, bound.action_key) == ("q_values", "action")
    td = TensorDict(observation=torch.randn(6, OBS), batch_size=[6])
    out = thr.Attributed(
        actor, Saliency(abs=False), inputs=["observation"], targets={"q": ActionValue()}
    )(td)
    want = CSaliency(net).attribute(td["observation"], target=out["action"].tolist(), abs=False)
    torch.testing.assert_close(out["attribution", "q", "observation"], want)


def test_action_value_errors():
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    logits_only = TensorDictModule(torch.nn.Linear(OBS, N_ACTIONS), ["observation"], ["logits"])
    with pytest.raises(KeyError, match="action_value"):
        explained = thr.Attributed(
            logits_only, "saliency", inputs=["observation"], targets={"q": ActionValue()}
        )
        explained(td.clone())

    with pytest.raises(RuntimeError, match="bound"):
        ActionValue()(td, td)

    bound = ActionValue().bind(logits_only)
    values = torch.randn(3, N_ACTIONS)
    out = TensorDict(action_value=values, batch_size=[3])
    two_hot = TensorDict(action=torch.tensor([[1, 1, 0, 0]] * 3), batch_size=[3])
    with pytest.raises(ValueError, match="not one-hot"):
        bound(out, two_hot)
    floats = TensorDict(action=torch.randn(3, 2), batch_size=[3])
    with pytest.raises(ValueError, match="expected a one-hot"):
        bound(out, floats)
    outside = TensorDict(action=torch.tensor([0, 1, N_ACTIONS]), batch_size=[3])
    with pytest.raises(IndexError, match="outside"):
        bound(out, outside)
    scalar_values = TensorDict(action_value=torch.randn(3), batch_size=[3])
    with pytest.raises(ValueError, match="one value per action"):
        bound(scalar_values, outside)
    # the index and one-hot encodings pick the same entries
    index = TensorDict(action=torch.tensor([2, 0, 3]), batch_size=[3])
    one_hot = TensorDict(
        action=torch.nn.functional.one_hot(index["action"], N_ACTIONS), batch_size=[3]
    )
    torch.testing.assert_close(bound(out, index), values[torch.arange(3), index["action"]])
    torch.testing.assert_close(bound(out, one_hot), bound(out, index))


def test_action_log_prob_on_a_q_value_actor_points_to_action_value():
    _, policy = dqn("one_hot")
    with pytest.raises(ValueError, match=r"ActionValue\(\)"):
        thr.Attributed(policy, "saliency", inputs=["observation"], targets={"p": ActionLogProb()})


def test_action_value_index_picks_one_step_and_names_a_bad_one():
    values = torch.randn(2, 3, N_ACTIONS)  # [samples, steps, actions]
    action = torch.tensor([[0, 1, 2], [3, 0, 1]])
    out, ref = (
        TensorDict(action_value=values, batch_size=[2]),
        TensorDict(action=action, batch_size=[2]),
    )
    got = ActionValue(index=1).bind(torch.nn.Identity())(out, ref)
    torch.testing.assert_close(got, values[torch.arange(2), 1, action[:, 1]])
    with pytest.raises(IndexError, match="outside"):
        ActionValue(index=3).bind(torch.nn.Identity())(out, ref)
    assert repr(ActionValue(index=(1, 0))) == "ActionValue(index=(1, 0))"
