"""``tdhook/overhead_fraction`` = seconds spent evaluating / wall time since ``start()`` or
the first call, checked on a fake clock: training steps take 7 s, each evaluation rollout 3 s."""

from __future__ import annotations

import types
from typing import Any

import pytest

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import (
    AttributionSpec,
    InterpretabilityCallback,
    LogTo,
    Schedule,
    evaluation,
)
from tdhook_rl.targets import ActionLogProb

from models import PointMassEnv, gaussian_actor


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slow_callback(
    monkeypatch, eval_seconds: float, max_overhead, logger="csv", log_dir="."
) -> tuple[FakeClock, Any]:
    """A callback on a fake clock whose evaluation rollouts take ``eval_seconds``."""
    clock = FakeClock()
    monkeypatch.setattr(evaluation, "time", types.SimpleNamespace(perf_counter=clock))
    env = PointMassEnv()
    rollout = env.rollout

    def slow_rollout(*args, **kw):
        clock.now += eval_seconds
        return rollout(*args, **kw)

    monkeypatch.setattr(env, "rollout", slow_rollout)
    callback = InterpretabilityCallback(
        env,
        gaussian_actor(action_dim=1),
        AttributionSpec({"policy": ActionLogProb()}, method=Saliency()),
        schedule=Schedule(every_frames=1000, eval_steps=10, max_overhead=max_overhead),
        log=LogTo(logger, log_dir=log_dir, figures_every=0),
    )
    return clock, callback


@pytest.mark.parametrize("started", [False, True], ids=["first-call", "start()"])
def test_overhead_fraction_is_eval_seconds_over_wall_time_since_the_start(
    tmp_path, monkeypatch, started
):
    clock, callback = slow_callback(monkeypatch, 3.0, log_dir=tmp_path, max_overhead=None)
    clock.now += 50.0  # set-up before the loop does not count
    assert callback.overhead_fraction == 0.0
    if started:
        callback.start()
        clock.now += 5.0  # e.g. the first collection, before the first call
    t0 = 5.0 if started else 0.0
    logged = []
    for frames in range(0, 3001, 500):
        scalars = callback(frames)
        if scalars is not None:
            logged.append((scalars["tdhook/eval_seconds"], scalars["tdhook/overhead_fraction"]))
        clock.now += 7.0  # a training iteration
    # calls at 0, 500, ..., 3000; evaluations at 1000 (t = 14 + 3), 2000 (t = 28 + 6) and
    # 3000 (t = 42 + 9), counting from the first call (plus t0 from start())
    assert logged == [
        pytest.approx((3.0, 3 / (t0 + 17))),
        pytest.approx((3.0, 6 / (t0 + 34))),
        pytest.approx((3.0, 9 / (t0 + 51))),
    ]
    assert callback.overhead_fraction == pytest.approx(9 / (t0 + 58))


def test_max_overhead_defers_evaluations_to_keep_the_cost_bounded(tmp_path, monkeypatch):
    """Evaluations of 30 s every 1000 frames against 7 s training iterations of 500 frames
    would cost 30 / (30 + 14) = 68% of the wall time; a 25% bound defers them."""
    clock, callback = slow_callback(monkeypatch, 30.0, logger=None, max_overhead=0.25)
    callback.start()
    evaluated = []
    for frames in range(0, 40_001, 500):
        # replays the rule: due, and the cost so far at most 25% of the elapsed time
        expected = callback.due(frames) and not (
            callback._cost > 0.25 * (clock.now - callback._clock)
        )
        if callback(frames) is not None:
            evaluated.append(frames)
        assert (evaluated[-1:] == [frames]) == expected
        clock.now += 7.0
    assert callback.deferred > 0
    # the fraction stays within one evaluation of the bound: 30 s over the elapsed time
    elapsed = clock.now - callback._clock
    assert callback.overhead_fraction <= 0.25 + 30.0 / elapsed
    assert len(evaluated) < 40  # 40 would be due without the bound
    with pytest.raises(ValueError, match=r"max_overhead must be in \(0, 1\) or None, got 1.5"):
        Schedule(max_overhead=1.5)
