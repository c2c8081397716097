"""The callback checks its options against the policy and the environment when it is built
(one dry call of the wrapped module on ``env.reset()``), not after ``every_frames`` of
training: each mistake is a ``ValueError`` or ``KeyError`` naming what is wrong and what
exists."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import (
    AttributionSpec,
    InterpretabilityCallback,
    Interventions,
    LogTo,
    Schedule,
)
from tdhook_rl.interventions import Ablate
from tdhook_rl.targets import ActionLoc, ActionLogProb

from models import OBS, PointMassEnv, gaussian_actor


class CountingEnv(PointMassEnv):
    """Counts resets and rollouts: the checks reset once and never roll out."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0
        self.rollouts = 0

    def _reset(self, td):
        self.resets += 1
        return super()._reset(td)

    def rollout(self, *args, **kwargs):
        self.rollouts += 1
        return super().rollout(*args, **kwargs)


def build(module=None, env=None, **spec):
    spec.setdefault("targets", {"policy": ActionLoc()})
    return InterpretabilityCallback(
        env if env is not None else PointMassEnv(),
        module if module is not None else gaussian_actor(action_dim=1),
        AttributionSpec(method=Saliency(), **spec),
        schedule=Schedule(every_frames=1000, eval_steps=5, max_overhead=None),
        log=LogTo(None, figures_every=0),
    )


def test_a_good_callback_makes_one_dry_call_and_no_rollout():
    env = CountingEnv()
    callback = build(env=env, feature_names=[f"x{i}" for i in range(OBS)])
    assert (env.resets, env.rollouts) == (1, 0)
    assert callback.groups.names == [f"x{i}" for i in range(OBS)]
    assert callback.heads == {"policy": "ActionLoc('loc')"}


def test_a_value_head_on_an_actor_without_a_critic_fails_at_construction():
    with pytest.raises(
        KeyError,
        match=r"target 'value' reads key 'state_value', which is missing.*The module writes "
        r"\['loc', 'scale', 'action', 'action_log_prob'\].*pass the module that computes "
        r"every head \(e.g. the actor-critic",
    ):
        build(targets={"policy": ActionLoc(), "value": "state_value"})


def test_action_log_prob_on_a_deterministic_actor_fails_at_construction():
    deterministic = TensorDictModule(torch.nn.Linear(OBS, 1), ["observation"], ["action"])
    with pytest.raises(
        ValueError,
        match=r"InterpretabilityCallback: ActionLogProb needs a probabilistic actor.*none was "
        r"found. Explain a deterministic output with a key or Index\(key, i\) instead",
    ):
        build(deterministic, targets={"policy": ActionLogProb()})
    callback = build(deterministic, targets={"policy": ("action", 0)})  # what it suggests
    assert callback.heads == {"policy": "Index('action', 0)"}


def test_an_input_the_module_does_not_read_fails_at_construction():
    with pytest.raises(
        ValueError, match=r"input 'pixels' is neither an entry the module reads \(its in_keys are "
    ):
        build(inputs=["pixels"])


def test_feature_names_that_do_not_fit_the_observation_fail_at_construction():
    with pytest.raises(
        ValueError,
        match=r"feature_names do not fit input 'observation' \(per-sample shape \(9,\)\): 3 "
        r"feature names for an input of shape \(9,\): give one per feature \(9\)$",
    ):
        build(feature_names=["x", "v", "t"])
    with pytest.raises(ValueError, match=r"pool_agents=True\) needs a multi-agent input"):
        build(pool_agents=True)


def test_interventions_on_unknown_sites_fail_at_construction():
    with pytest.raises(ValueError, match=r"Interventions: 'off': .*module.0.module.0.99"):
        InterpretabilityCallback(
            PointMassEnv(),
            gaussian_actor(action_dim=1),
            AttributionSpec({"policy": ActionLoc()}),
            interventions=Interventions({"off": {"module.0.module.0.99": Ablate()}}),
            log=LogTo(None),
        )


def test_options_are_grouped_objects_and_the_call_takes_frames():
    actor = gaussian_actor(action_dim=1)
    with pytest.raises(TypeError, match=r"attribution must be a AttributionSpec, got dict"):
        InterpretabilityCallback(PointMassEnv(), actor, {"policy": ActionLoc()})
    with pytest.raises(TypeError, match=r"schedule must be a Schedule, got int: e.g. Schedule"):
        InterpretabilityCallback(
            PointMassEnv(), actor, AttributionSpec({"policy": ActionLoc()}), schedule=1000
        )
    callback = build()
    with pytest.raises(
        TypeError,
        match=r"callback\(frames\), got ProbabilisticActor; it explains the module it was "
        r"built with \(pass that module at construction\)",
    ):
        callback(actor)
    assert callback(torch.tensor(999)) is None  # a 0-d integer tensor counts frames too
    with pytest.raises(ValueError, match=r"every_frames and eval_steps must be positive"):
        Schedule(every_frames=0)
    with pytest.raises(ValueError, match=r"figures_every must be >= 0"):
        LogTo(None, figures_every=-1)
    with pytest.raises(ValueError, match=r"Interventions.episodes must be positive"):
        Interventions({}, episodes=0)
