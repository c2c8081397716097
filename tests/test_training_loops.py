"""``Attributed`` inside TorchRL's own training loops (issue 22): PPO with GAE and
``ClipPPOLoss``, DQN with ``init_random_frames``, a replay buffer resumed from a plain run.

Each loop runs with the wrapper and with the raw module from the same seeds; actions, losses
and parameters must be bitwise identical."""

from __future__ import annotations

import logging
import tempfile
import threading
from contextlib import nullcontext

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector
from torchrl.data import (
    Categorical,
    LazyMemmapStorage,
    LazyTensorStorage,
    TensorDictReplayBuffer,
)
from torchrl.modules import QValueActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

import tdhook_rl as thr
from tdhook_rl.attributed import attribution_disabled
from tdhook_rl.targets import ActionLogProb, ActionValue

from collector_helpers import shutdown_collector
from models import OBS, PointMassEnv, gaussian_actor, mlp

logging.getLogger("torchrl").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # InitTracker notice

HEADS = {"policy": ActionLogProb(), "value": "state_value"}


def actor_and_critic(seed: int = 0):
    actor = gaussian_actor(action_dim=1, seed=seed)
    torch.manual_seed(seed + 1)
    return actor, ValueOperator(mlp(OBS, 1, 16), in_keys=["observation"])


def ppo_loop(wrap: str | None, frames: int = 64, minibatch: int = 16) -> dict:
    """A tiny PPO run: Collector -> GAE -> ClipPPOLoss minibatches -> Adam steps.

    ``wrap``: None (TorchRL's own loop: the actor in the collector), ``"both"`` (actor and
    critic in the collector, wrapped), ``"critic"`` (a wrapped critic in GAE and the loss,
    loss calls inside ``disabled()``).
    """
    actor, critic = actor_and_critic()
    policy, loss_critic = actor, critic
    if wrap == "both":
        policy = thr.Attributed(
            TensorDictSequential(actor, critic),
            "saliency",
            inputs=["observation"],
            targets=HEADS,
            exclude_outputs=["state_value"],
        )
    elif wrap == "critic":
        loss_critic = thr.Attributed(
            critic, "ig", inputs=["observation"], targets={"value": "state_value"}
        )
    env = PointMassEnv(batch_size=(4,))
    env.set_seed(0)
    torch.manual_seed(0)
    collector = Collector(env, policy, frames_per_batch=32, total_frames=frames)
    gae = GAE(gamma=0.99, lmbda=0.95, value_network=loss_critic)
    loss_module = ClipPPOLoss(actor, loss_critic)
    optim = torch.optim.Adam(loss_module.parameters(), 1e-2)
    run: dict = {"actions": [], "losses": [], "batches": []}
    try:
        for batch in collector:
            run["batches"].append(batch.clone())
            run["actions"].append(batch["action"].clone())
            gae(batch)
            for mb in batch.reshape(-1).split(minibatch):
                context = loss_critic.disabled() if wrap == "critic" else nullcontext()
                with context:
                    losses = loss_module(mb)
                loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                run["losses"].append(loss.detach())
                loss.backward()
                optim.step()
                optim.zero_grad()
            collector.update_policy_weights_()
    finally:
        shutdown_collector(collector)
    run["params"] = [p.detach().clone() for p in loss_module.parameters()]
    return run


def assert_same_run(a: dict, b: dict) -> None:
    assert len(a["losses"]) == len(b["losses"]) > 0
    for x, y in zip(a["actions"], b["actions"], strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a["losses"], b["losses"], strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a["params"], b["params"], strict=True):
        assert torch.equal(x, y)


def test_both_heads_in_the_collector_with_gae_and_clip_ppo():
    """The README's pattern, Attributed(TensorDictSequential(actor, critic)) in the
    collector: with exclude_outputs=["state_value"], GAE stacks root and next and the run
    is TorchRL's own, bit for bit."""
    raw = ppo_loop(None)
    wrapped = ppo_loop("both")
    assert all(torch.isfinite(loss) for loss in wrapped["losses"])
    assert_same_run(raw, wrapped)
    for batch in wrapped["batches"]:
        assert "state_value" not in batch.keys()
        for head in HEADS:
            attribution = batch["attribution", head, "observation"]
            assert attribution.shape == batch["observation"].shape
            assert attribution.abs().sum() > 0
            assert batch["attribution", head, "valid"].all()


def test_a_raw_sequential_of_both_heads_still_breaks_gae():
    """Why exclude_outputs exists: the root state_value has no ("next", ...) twin."""
    actor, critic = actor_and_critic()
    collector = Collector(
        PointMassEnv(batch_size=(4,)),
        TensorDictSequential(actor, critic),
        frames_per_batch=32,
        total_frames=32,
    )
    try:
        batch = next(iter(collector))
    finally:
        shutdown_collector(collector)
    with pytest.raises(RuntimeError, match="exclusive"):
        GAE(gamma=0.99, lmbda=0.95, value_network=critic)(batch)


def test_exclude_outputs_must_name_an_output():
    _, critic = actor_and_critic()
    with pytest.raises(ValueError, match="does not write"):
        thr.Attributed(critic, "saliency", inputs=["observation"], targets={"v": "state_value"},
                       exclude_outputs=["value"])  # fmt: skip


def counted(explained: thr.Attributed, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the attribution passes of ``explained`` (one per ``method.attribute`` call)."""
    calls = [0]
    attribute = explained.method.attribute

    def counting(*args, **kwargs):
        calls[0] += 1
        return attribute(*args, **kwargs)

    monkeypatch.setattr(explained.method, "attribute", counting)
    return calls


def test_loss_calls_skip_the_attribution_pass_when_disabled(monkeypatch):
    """ClipPPOLoss calls the critic once per loss call; inside disabled() (this wrapper) or
    attribution_disabled() (all) that call only runs the module, with the same losses."""
    actor, critic = actor_and_critic()
    explained = thr.Attributed(critic, "ig", inputs=["observation"], targets={"v": "state_value"})
    calls = counted(explained, monkeypatch)
    env = PointMassEnv(batch_size=(4,))
    with torch.no_grad():
        batch = env.rollout(8, actor)
    GAE(gamma=0.99, lmbda=0.95, value_network=critic)(batch)
    loss_module = ClipPPOLoss(actor, explained)
    minibatches = batch.reshape(-1).split(8)

    def losses():
        torch.manual_seed(0)  # the entropy estimate samples
        return [loss_module(mb)["loss_critic"] for mb in minibatches]

    attributed = losses()
    assert calls[0] == len(minibatches) == 4
    with explained.disabled():
        alone = losses()
    with attribution_disabled():
        everything = losses()
    assert calls[0] == 4  # no pass in either block
    assert explained.attributing()  # the blocks restored the switch
    for x, y, z in zip(attributed, alone, everything, strict=True):
        assert torch.equal(x, y) and torch.equal(x, z)
    out = explained(batch[:, 0].clone())
    assert calls[0] == 5 and ("attribution", "v", "observation") in out.keys(True)


def test_ppo_loop_with_a_wrapped_critic_in_the_loss_is_unchanged():
    assert_same_run(ppo_loop(None), ppo_loop("critic"))


def test_the_switch_is_per_thread_and_the_flag_pickles():
    import pickle

    _, critic = actor_and_critic()
    explained = thr.Attributed(
        critic, "saliency", inputs=["observation"], targets={"v": "state_value"}
    )
    td = TensorDict(observation=torch.randn(3, OBS), batch_size=[3])
    entered, done = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def other_thread():
        entered.wait(5)
        seen["other"] = ("attribution", "v", "observation") in explained(td.clone()).keys(True)
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with attribution_disabled():
        entered.set()
        done.wait(5)
        seen["inside"] = "attribution" in explained(td.clone()).keys()
    thread.join()
    assert seen == {"other": True, "inside": False}
    explained.enabled = False
    copy = pickle.loads(pickle.dumps(explained))
    assert not copy.attributing() and "attribution" not in copy(td.clone()).keys()


class DiscretePointMass(PointMassEnv):
    """PointMassEnv with three actions (push left, none, right), for a Q-value actor."""

    def __init__(self, batch_size=()):
        super().__init__(batch_size)
        self.action_spec = Categorical(3, shape=self.batch_size)

    def _step(self, td):
        push = td["action"].float().unsqueeze(-1) - 1.0
        return super()._step(td.clone(False).set("action", push))


@pytest.mark.parametrize("init_random_frames", [16, 12], ids=["whole batches", "mid-batch"])
def test_random_frames_are_marked_not_measured(init_random_frames):
    """DQN-style: during init_random_frames the policy is not called, the collector leaves
    its zero-filled buffer in the attribution entries; their valid flag reads False."""
    env = DiscretePointMass((2,))
    torch.manual_seed(0)
    q_actor = QValueActor(mlp(OBS, 3, 16), in_keys=["observation"], spec=Categorical(3))
    explained = thr.Attributed(q_actor, "ig", inputs=["observation"], targets={"q": ActionValue()})
    collector = Collector(
        env, explained, frames_per_batch=8, total_frames=32, init_random_frames=init_random_frames
    )
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(32))
    try:
        batches = [batch.clone() for batch in collector]
    finally:
        shutdown_collector(collector)
    for batch in batches:
        buffer.extend(batch.reshape(-1))
    valid = torch.stack([b["attribution", "q", "valid"] for b in batches])  # [4, envs, time]
    assert valid.dtype == torch.bool
    random_frames = -(-init_random_frames // 8) * 8  # TorchRL rounds up to whole batches
    random_steps = random_frames // 2  # two environments
    steps = torch.arange(16).reshape(4, 1, 4).expand(4, 2, 4)  # each batch: 4 steps of 2 envs
    assert torch.equal(valid, steps >= random_steps)
    attribution = torch.stack([b["attribution", "q", "observation"] for b in batches])
    assert attribution[~valid].abs().max() == 0  # what TorchRL wrote there: zeros
    assert attribution[valid].abs().sum(-1).min() > 0  # measured
    stored = buffer.storage[: len(buffer)]
    assert stored["attribution", "q", "valid"].sum() == 32 - random_frames


def test_recorded_random_frames_are_marked_and_probes_skip_them():
    """The same for Recorded: its activations_valid flag is False on the collector's
    zero-filled random frames, and fit_probes leaves those steps out (a probe of a unit on
    its own value is exact on the measured steps, and would not be on the zeros)."""
    env = DiscretePointMass((2,))
    torch.manual_seed(0)
    q_actor = QValueActor(mlp(OBS, 3, 16), in_keys=["observation"], spec=Categorical(3))
    recorded = thr.Recorded(q_actor, {"h": "module.0.module.1"})
    collector = Collector(env, recorded, frames_per_batch=8, total_frames=32, init_random_frames=16)
    try:
        batches = [batch.clone() for batch in collector]
    finally:
        shutdown_collector(collector)
    data = torch.cat(batches, dim=-1)  # [envs, 16 steps]
    valid = data["activations_valid"]
    assert torch.equal(valid, torch.arange(16).expand(2, 16) >= 8)
    assert data["activations", "h"][~valid].abs().max() == 0  # zero-filled, not measured
    # a label that is off by 5 on the zero-filled steps: they would dominate a probe
    data["label"] = data["observation"][..., 0] + 5.0 * (~valid).float()
    label = {"x": "label"}
    rows = thr.probes.fit_probes(data, ["h"], label, held_out=0.5).rows
    measured = thr.probes.fit_probes(data[:, 8:], ["h"], label, held_out=0.5).rows
    assert rows[0]["n_train"] + rows[0]["n_test"] == int(valid.sum()) == 16
    assert rows[0]["r2"] == pytest.approx(measured[0]["r2"])  # as if they were not there
    data["activations_valid"] = torch.ones_like(valid)  # pretend the zeros were measured
    polluted = thr.probes.fit_probes(data, ["h"], label, held_out=0.5).rows
    assert polluted[0]["n_train"] + polluted[0]["n_test"] == 32
    assert polluted[0]["r2"] != pytest.approx(rows[0]["r2"])


def plain_checkpoint(storage_cls, actor) -> str:
    """A replay buffer written by a run without the wrapper, saved with ``dumps``."""
    collector = Collector(PointMassEnv((2,)), actor, frames_per_batch=8, total_frames=16)
    buffer = TensorDictReplayBuffer(storage=storage_cls(64))
    try:
        for batch in collector:
            buffer.extend(batch)
    finally:
        shutdown_collector(collector)
    path = tempfile.mkdtemp()
    buffer.dumps(path)
    return path


@pytest.mark.parametrize("storage_cls", [LazyTensorStorage, LazyMemmapStorage])
def test_resuming_a_plain_replay_buffer_with_the_wrapper(storage_cls):
    """The restored storage has no attribution entries: LazyTensorStorage fails on the
    collector's named batches, LazyMemmapStorage drops the new entries. Refilled through
    fill_unmeasured, the buffer takes the wrapper's batches; the old rows read not measured."""
    actor = gaussian_actor(action_dim=1)
    explained = thr.Attributed(
        actor, "ig", inputs=["observation"], targets={"policy": ActionLogProb()}
    )
    path = plain_checkpoint(storage_cls, actor)
    restored = TensorDictReplayBuffer(storage=storage_cls(64))
    restored.loads(path)
    old_rows = restored.storage[: len(restored)]
    old_observations = old_rows["observation"].clone()

    buffer = TensorDictReplayBuffer(storage=storage_cls(64))
    buffer.extend(explained.fill_unmeasured(old_rows))
    collector = Collector(PointMassEnv((2,)), explained, frames_per_batch=8, total_frames=16)
    try:
        for batch in collector:
            buffer.extend(batch)  # named (None, "time"): what failed before
    finally:
        shutdown_collector(collector)
    stored = buffer.storage[: len(buffer)]
    n_old = len(old_observations)
    assert len(buffer) == 2 * n_old
    assert torch.equal(stored["observation"][:n_old], old_observations)
    valid = stored["attribution", "policy", "valid"]
    assert not valid[:n_old].any() and valid[n_old:].all()
    assert stored["attribution", "policy", "observation"][n_old:].abs().sum() > 0
    assert stored["attribution", "policy", "completeness_delta"].shape == valid.shape


def test_a_restored_plain_storage_refuses_named_batches_without_the_refill():
    """The failure the refill avoids (TorchRL 0.14.1, tensordict 0.14.3)."""
    actor = gaussian_actor(action_dim=1)
    explained = thr.Attributed(
        actor, "saliency", inputs=["observation"], targets={"policy": ActionLogProb()}
    )
    restored = TensorDictReplayBuffer(storage=LazyTensorStorage(64))
    restored.loads(plain_checkpoint(LazyTensorStorage, actor))
    collector = Collector(PointMassEnv((2,)), explained, frames_per_batch=8, total_frames=8)
    try:
        batch = next(iter(collector))
    finally:
        shutdown_collector(collector)
    with pytest.raises(RuntimeError, match="Names of a subtensordict"):
        restored.extend(batch)


def test_under_torch_compile_only_the_module_is_traced():
    """The attribution pass runs eagerly under torch.compile (no graph breaks inside it, no
    retracing); results equal the eager wrapper's, and the switch still works on cached
    graphs. backend="eager": dynamo's tracing without inductor's code generation."""
    actor, critic = actor_and_critic()
    explained = thr.Attributed(
        TensorDictSequential(actor, critic), "ig", inputs=["observation"], targets=HEADS
    )
    td = TensorDict(observation=torch.randn(6, OBS), batch_size=[6])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(explained)(td.clone())
    reasons = " ".join(str(b.reason) for b in explanation.break_reasons)
    assert "autograd" not in reasons and "ContextVar" not in reasons, reasons
    compiled = torch.compile(explained, backend="eager")
    torch.manual_seed(0)
    eager_out = explained(td.clone())
    torch.manual_seed(0)
    compiled_out = compiled(td.clone())
    for head in HEADS:
        torch.testing.assert_close(
            compiled_out["attribution", head, "observation"],
            eager_out["attribution", head, "observation"],
        )
    assert torch.equal(compiled_out["action"], eager_out["action"])
    with explained.disabled():
        assert "attribution" not in compiled(td.clone()).keys()
    assert "attribution" in compiled(td.clone()).keys()
    explained.enabled = False  # read where dynamo traces it: the module alone, one graph
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(explained)(td.clone())
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()
