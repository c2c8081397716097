"""Hidden-site attributions inside TorchRL's loops (issue 16, item 5): ``env.rollout``,
``Collector``, ``MultiSyncCollector`` with two worker processes (the wrapper pickled to
them), and a recurrent policy (``LSTMModule``) step by step.

Each collected batch is checked entry by entry against a direct call of the same
``Attributed`` on the same TensorDict (what the policy read at each step), not just by
shape; the direct call itself is checked against captum's ``LayerIntegratedGradients``."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs import InitTracker, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import LSTMModule, QValueModule

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.targets import ActionLoc, ActionLogProb, ActionValue

from collector_helpers import shutdown_collector
from models import OBS, PointMassEnv, shared_trunk_actor_critic

logging.getLogger("torchrl").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # InitTracker notice

TRUNK = "module.0.module.1"  # the shared trunk's Tanh (32 units), read by both heads
HEADS = {"loc": ActionLoc(), "policy": ActionLogProb(), "value": "state_value"}
N_STEPS = 8
DETERMINISTIC = ExplorationType.DETERMINISTIC


def explained_policy() -> thr.Attributed:
    # the trunk alone: every path from the observation goes through it, so beside it (one
    # joint attribution) the observation's attributions would be all zero
    return thr.Attributed(
        shared_trunk_actor_critic(),
        IntegratedGradients(n_steps=N_STEPS),
        inputs=[TRUNK],
        targets=HEADS,
    )


def make_env() -> PointMassEnv:
    """Two copies of the point mass (a picklable factory for the workers)."""
    return PointMassEnv((2,))


def attribution_keys(explained: thr.Attributed) -> list[tuple[str, ...]]:
    return [
        ("attribution", head, entry)
        for head in HEADS
        for entry in (TRUNK, "completeness_delta", "valid")
    ]


def direct_call(explained: thr.Attributed, batch: TensorDict) -> TensorDict:
    """The same wrapper called on what the policy read, outside any loop."""
    with set_exploration_type(DETERMINISTIC), torch.no_grad():
        return explained(batch.select("observation").clone())


def check_against_direct_call(explained: thr.Attributed, batch: TensorDict) -> None:
    reference = direct_call(explained, batch)
    torch.testing.assert_close(batch["action"], reference["action"])
    for key in attribution_keys(explained):
        got, want = batch[key], reference[key]
        assert got.shape == want.shape, key
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=lambda m, k=key: f"{k} {m}")
    # the trunk's attributions are not all zero: a real measurement was compared
    assert batch["attribution", "value", TRUNK].abs().sum() > 0
    assert batch["attribution", "loc", TRUNK].shape == (*batch.batch_size, 32)


def check_against_captum(batch: TensorDict) -> None:
    """The value head's trunk attribution is captum's LayerIntegratedGradients (one call)."""
    module = shared_trunk_actor_critic()
    obs = batch["observation"].reshape(-1, OBS)

    def value(x: torch.Tensor) -> torch.Tensor:
        return module(TensorDict(observation=x, batch_size=x.shape[:1]))["state_value"]

    want = LayerIntegratedGradients(value, module.get_submodule(TRUNK)).attribute(
        obs, n_steps=N_STEPS, method="gausslegendre"
    )
    got = batch["attribution", "value", TRUNK].reshape(-1, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_env_rollout_matches_a_direct_call_and_leaves_the_policy_alone():
    explained = explained_policy()
    env = make_env()
    env.set_seed(0)
    with set_exploration_type(DETERMINISTIC):
        plain = env.rollout(12, shared_trunk_actor_critic(), break_when_any_done=False)
        env.set_seed(0)
        rollout = env.rollout(12, explained, break_when_any_done=False)
    assert rollout.batch_size == (2, 12)
    assert torch.equal(plain["action"], rollout["action"])
    assert torch.equal(plain["next", "observation"], rollout["next", "observation"])
    check_against_direct_call(explained, rollout)
    check_against_captum(rollout)
    assert not any(v.requires_grad for v in rollout["attribution"].values(True, True))
    module = explained.wrapped
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def test_collector_batches_match_a_direct_call():
    explained = explained_policy()
    collector = Collector(
        make_env, explained, frames_per_batch=16, total_frames=32, exploration_type=DETERMINISTIC
    )
    try:
        batches = list(collector)
    finally:
        shutdown_collector(collector)
    assert len(batches) == 2
    for batch in batches:
        assert batch["attribution", "policy", TRUNK].shape == (*batch.batch_size, 32)
        assert batch["attribution", "policy", "valid"].all()
        check_against_direct_call(explained, batch)
    check_against_captum(batches[-1])


def test_the_wrapper_pickles_with_its_hidden_sites():
    explained = explained_policy()
    copy = pickle.loads(pickle.dumps(explained))
    assert [s.name for s in copy.hidden] == [TRUNK]
    td = TensorDict(observation=torch.randn(5, OBS), batch_size=[5])
    ours, theirs = direct_call(explained, td), direct_call(copy, td)
    for key in attribution_keys(explained):
        torch.testing.assert_close(ours[key], theirs[key], atol=0, rtol=0)
    # the copy intercepts its own modules, not the original's
    assert copy.hidden[0].module is copy.wrapped.get_submodule(TRUNK)


def test_multi_sync_collector_two_workers_match_a_direct_call():
    explained = explained_policy()
    collector = MultiSyncCollector(
        [make_env] * 2,
        explained,
        frames_per_batch=16,
        total_frames=32,
        exploration_type=DETERMINISTIC,
    )
    try:
        batches = []
        for i, batch in enumerate(collector):
            batches.append(batch.clone())
            if i == 0:  # new weights reach the workers' pickled wrappers as the raw module's
                with torch.no_grad():
                    for p in explained.wrapped.parameters():
                        p.mul_(1.1)
                collector.update_policy_weights_(TensorDict.from_module(explained.wrapped))
    finally:
        shutdown_collector(collector)
    assert len(batches) == 2
    for batch in batches:
        assert batch["attribution", "value", "valid"].all()
    check_against_direct_call(explained, batches[-1])  # with the updated weights
    with torch.no_grad():  # the first batch was collected with the original weights
        for p in explained.wrapped.parameters():
            p.div_(1.1)
    check_against_direct_call(explained, batches[0])
    check_against_captum(batches[0])


# recurrent policy: an LSTM whose output "embed" (a key it writes) is the hidden site
HIDDEN = 8
STATE = ("recurrent_state_h", "recurrent_state_c")


def recurrent_policy(env) -> tuple[TransformedEnv, TensorDictSequential]:
    torch.manual_seed(0)
    memory = LSTMModule(input_size=OBS, hidden_size=HIDDEN, in_key="observation", out_key="embed")
    env = TransformedEnv(env, InitTracker())
    env.append_transform(memory.make_tensordict_primer())
    head = TensorDictModule(torch.nn.Linear(HIDDEN, 3), ["embed"], ["action_value"])
    from torchrl.data import OneHot

    return env, TensorDictSequential(memory, head, QValueModule(spec=OneHot(3)))


class DiscretePointMass(PointMassEnv):
    """The point mass pushed by one of three one-hot actions: -1, 0, +1."""

    def __init__(self) -> None:
        super().__init__(())
        from torchrl.data import OneHot

        self.action_spec = OneHot(3)

    def _step(self, td):
        force = (td["action"].float().argmax(-1, keepdim=True) - 1).float()
        return super()._step(td.set("action", force))


@pytest.mark.parametrize("method", [Saliency(abs=False), IntegratedGradients(n_steps=N_STEPS)])
def test_recurrent_policy_step_by_step(method):
    """Each step of the rollout is attributed given the carried state; the LSTM's output at
    that step (a hidden site) is what a direct call on the step's inputs attributes."""
    env, policy = recurrent_policy(DiscretePointMass())
    explained = thr.Attributed(policy, method, inputs=["embed"], targets={"q": ActionValue()})
    env.set_seed(0)
    plain = env.rollout(15, policy, break_when_any_done=False)
    env.set_seed(0)
    rollout = env.rollout(15, explained, break_when_any_done=False)
    assert torch.equal(plain["action"], rollout["action"])
    for key in STATE:  # the memory carried from step to step is unchanged
        torch.testing.assert_close(plain["next", key], rollout["next", key])
    # the state read at step t is the one written at step t - 1 (it does change), except
    # after a reset (``is_init``: the LSTM starts from zeros there)
    carried = ~rollout["is_init"][1:].squeeze(-1)
    assert carried.sum() >= 10
    state = rollout[STATE[0]][1:][carried]
    torch.testing.assert_close(state, rollout["next", STATE[0]][:-1][carried])
    assert state.abs().sum() > 0
    for t in range(rollout.shape[0]):  # one step at a time, as the policy saw it
        step = rollout[t : t + 1].select("observation", "is_init", *STATE).clone()
        with torch.no_grad():
            reference = explained(step)
        assert torch.equal(reference["action"], rollout["action"][t : t + 1])
        torch.testing.assert_close(
            rollout["attribution", "q", "embed"][t],
            reference["attribution", "q", "embed"][0],
            atol=1e-6,
            rtol=1e-5,
        )
    # at the site "embed" the Q-value is linear: saliency is the taken action's weights,
    # IG (a straight path at the site) multiplies them by embed - embed(baseline input)
    weight = policy[1].module.weight  # (3, HIDDEN)
    taken = rollout["action"].float() @ weight.detach()  # (T, HIDDEN)
    got = rollout["attribution", "q", "embed"]
    if isinstance(method, Saliency):
        torch.testing.assert_close(got, taken)
    else:  # the site's baseline: its activation with every float input (state too) at 0
        zeros = rollout.select("observation", "is_init", *STATE).clone()
        for key in ("observation", *STATE):
            zeros[key] = torch.zeros_like(zeros[key])
        with torch.no_grad():
            base = policy(zeros)["embed"]
        torch.testing.assert_close(got, taken * (rollout["embed"] - base), atol=1e-5, rtol=1e-4)
