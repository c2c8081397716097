"""One module used from two threads at once (a collector's thread and an evaluation thread):
each call sees only its own wrappers, and nothing stays on the user's module afterwards.

The interleaving is forced: a submodule whose forward waits on an event holds the first
thread inside its call while the second thread runs. Every wait is bounded.
"""

from __future__ import annotations

import io
import pickle
import threading

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import tdhook_rl as thr
from tdhook_rl.interventions import Ablate

TIMEOUT = 10.0


class Gate(nn.Module):
    """Identity; a call from a thread named in ``held`` announces itself on that thread's
    ``inside`` event and waits for its ``release`` event."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, tuple[threading.Event, threading.Event]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        events = self.held.get(threading.current_thread().name)
        if events is not None:
            events[0].set()
            if not events[1].wait(TIMEOUT):
                raise TimeoutError("the test never released the gate")
        return x

    def __getstate__(self) -> dict:  # events do not pickle
        return {**super().__getstate__(), "held": {}}


def gated_policy() -> tuple[TensorDictModule, Gate]:
    """Linear -> Gate -> Tanh (the site, ``module.2``) -> Linear: a held call stops before
    the site."""
    torch.manual_seed(0)
    gate = Gate()
    net = nn.Sequential(nn.Linear(3, 8), gate, nn.Tanh(), nn.Linear(8, 2))
    return TensorDictModule(net, ["observation"], ["action"]), gate


SITE = "module.2"


def obs(n: int, value: float) -> TensorDict:
    return TensorDict(observation=torch.full((n, 3), value), batch_size=[n])


def hidden(policy: TensorDictModule, td: TensorDict) -> torch.Tensor:
    return torch.tanh(policy.module[0](td["observation"]))


def assert_clean(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        assert not sub._forward_hooks, name
        assert not sub._forward_pre_hooks, name
        assert "forward" not in sub.__dict__, name
    pickle.dumps(module)
    torch.save(module, io.BytesIO())


class Held:
    """``fn()`` run in a thread named ``name`` that stops at the gate until :meth:`finish`."""

    def __init__(self, gate: Gate, name: str, fn) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        gate.held[name] = (self.inside, self.release)
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self.thread.start()
        assert self.inside.wait(TIMEOUT), f"thread {name} never reached the gate"

    def _run(self, fn) -> None:
        try:
            self.result = fn()
        except BaseException as err:  # re-raised by finish() in the test's thread
            self.error = err

    def finish(self):
        self.release.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def test_two_recorders_from_two_threads_record_their_own_calls():
    policy, gate = gated_policy()
    a, b = thr.Recorded(policy, {"h": SITE}), thr.Recorded(policy, {"h": SITE})
    td_a, td_b = obs(2, 1.0), obs(3, -1.0)
    held = Held(gate, "a", lambda: a(td_a.clone()))  # inside a's call, before the site
    try:
        got_b = b(td_b.clone())  # runs the site while a's recording is active
    finally:
        got_a = held.finish()
    torch.testing.assert_close(got_a["activations", "h"], hidden(policy, td_a))
    torch.testing.assert_close(got_b["activations", "h"], hidden(policy, td_b))
    assert_clean(policy)


def test_calls_that_end_in_any_order_leave_nothing_on_the_module():
    policy, gate = gated_policy()
    a, b = thr.Recorded(policy, {"h": SITE}), thr.Recorded(policy, {"h": SITE})
    td = obs(2, 0.5)
    first = Held(gate, "a", lambda: a(td.clone()))
    second = Held(gate, "b", lambda: b(td.clone()))
    try:
        got_a = first.finish()  # the first to enter leaves first
    finally:
        got_b = second.finish()
    for got in (got_a, got_b):
        torch.testing.assert_close(got["activations", "h"], hidden(policy, td))
    assert_clean(policy)


def test_a_clean_call_while_another_thread_is_intervening_is_clean():
    policy, gate = gated_policy()
    ablated = thr.Intervened(policy, {SITE: Ablate()})
    td = obs(4, 0.5)
    want_clean = policy(td.clone())["action"].detach()
    held = Held(gate, "a", lambda: ablated(td.clone()))
    try:
        clean = policy(td.clone())
    finally:
        got = held.finish()
    torch.testing.assert_close(clean["action"], want_clean)
    torch.testing.assert_close(got["action"], policy.module[3].bias.expand(4, 2))  # ablated
    assert_clean(policy)


def test_a_recording_thread_is_not_changed_by_an_intervening_one():
    policy, gate = gated_policy()
    recorded = thr.Recorded(policy, {"h": SITE})
    ablated = thr.Intervened(policy, {SITE: Ablate(value=2.0)})
    td = obs(2, 0.3)
    want = policy(td.clone())["action"].detach()
    intervening = Held(gate, "b", lambda: ablated(td.clone()))
    recording = Held(gate, "a", lambda: recorded(td.clone()))
    try:
        got = recording.finish()  # runs the site while the other thread's ablation is active
    finally:
        intervening.finish()
    torch.testing.assert_close(got["activations", "h"], hidden(policy, td))
    torch.testing.assert_close(got["action"], want)
    assert_clean(policy)


def test_an_exception_in_one_thread_leaves_the_other_working_and_nothing_behind():
    policy, gate = gated_policy()
    recorded = thr.Recorded(policy, {"h": SITE})
    bad = thr.Intervened(policy, {SITE: Ablate(units=[99])})
    td = obs(2, 0.1)
    held = Held(gate, "a", lambda: recorded(td.clone()))
    try:
        with pytest.raises(IndexError, match=r"site 'module\.2'"):
            bad(td.clone())
    finally:
        got = held.finish()
    torch.testing.assert_close(got["activations", "h"], hidden(policy, td))
    assert_clean(policy)


def test_a_module_with_wrappers_that_ran_pickles_and_saves():
    policy, _ = gated_policy()
    recorded = thr.Recorded(thr.Intervened(policy, {SITE: Ablate(units=[0])}), [SITE])
    recorded(obs(2, 1.0))
    with pytest.raises(RuntimeError):  # an exception mid-forward
        recorded(TensorDict(observation=torch.ones(2, 4), batch_size=[2]))
    assert_clean(policy)
    clone = pickle.loads(pickle.dumps(recorded))
    assert torch.equal(clone(obs(2, 1.0))["activations", SITE][:, 0], torch.zeros(2))
