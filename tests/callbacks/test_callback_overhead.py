"""``tdhook/overhead_fraction`` = seconds spent evaluating / wall time since ``start()`` or
the first call, checked on a fake clock: training steps take 7 s, each evaluation rollout 3 s."""

from __future__ import annotations

import types

import pytest

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import InterpretabilityCallback, evaluation
from tdhook_rl.targets import ActionLogProb

from models import PointMassEnv, gaussian_actor


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("started", [False, True], ids=["first-call", "start()"])
def test_overhead_fraction_is_eval_seconds_over_wall_time_since_the_start(
    tmp_path, monkeypatch, started
):
    clock = FakeClock()
    monkeypatch.setattr(evaluation, "time", types.SimpleNamespace(perf_counter=clock))
    env = PointMassEnv()
    rollout = env.rollout

    def slow_rollout(*args, **kwargs):
        clock.now += 3.0
        return rollout(*args, **kwargs)

    monkeypatch.setattr(env, "rollout", slow_rollout)
    callback = InterpretabilityCallback(
        env,
        gaussian_actor(action_dim=1),
        targets={"policy": ActionLogProb()},
        method=Saliency(),
        every_frames=1000,
        eval_steps=10,
        log_dir=tmp_path,
        figures_every=0,
    )
    clock.now += 50.0  # set-up before the loop does not count
    assert callback.overhead_fraction == 0.0
    if started:
        callback.start()
        clock.now += 5.0  # e.g. the first collection, before the first call
    t0 = 5.0 if started else 0.0
    logged = []
    for frames in range(0, 3001, 500):
        scalars = callback(None, frames)
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
