"""``Attributed`` inside TorchRL: env.rollout, Collector and MultiSyncCollector (2 processes)."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.targets import ActionLogProb

from collector_helpers import shutdown_collector
from models import OBS, make_double_pendulum, shared_trunk_actor_critic

TARGETS = {"policy": ActionLogProb(), "value": "state_value"}


def explained_policy(n_steps: int = 8) -> thr.Attributed:
    return thr.Attributed(
        shared_trunk_actor_critic(),
        IntegratedGradients(n_steps=n_steps),
        inputs=["observation"],
        targets=TARGETS,
    )


def captum_check(actor_critic, td: TensorDict, n_steps: int = 8) -> None:
    """Both heads of a collected batch against captum, one call per head."""
    obs, action = td["observation"], td["action"]
    policy, value = actor_critic.get_policy_operator(), actor_critic.get_value_operator()

    def log_prob(x):
        k = x.shape[0] // obs.shape[0]
        return policy.get_dist(TensorDict(observation=x, batch_size=x.shape[:1])).log_prob(
            action.repeat(k, 1)
        )

    def state_value(x):
        return value(TensorDict(observation=x, batch_size=x.shape[:1]))["state_value"].squeeze(-1)

    for name, fn in (("policy", log_prob), ("value", state_value)):
        want = CIntegratedGradients(fn).attribute(obs, n_steps=n_steps)
        torch.testing.assert_close(
            td["attribution", name, "observation"], want, atol=1e-4, rtol=1e-3
        )


def test_env_rollout_unchanged_and_attributed():
    env = make_double_pendulum()
    raw = shared_trunk_actor_critic()
    env.set_seed(0)
    torch.manual_seed(0)
    plain = env.rollout(30, raw)
    env.set_seed(0)
    torch.manual_seed(0)
    rollout = env.rollout(30, explained_policy())
    assert torch.equal(plain["action"], rollout["action"])
    assert torch.equal(plain["next", "observation"], rollout["next", "observation"])
    assert rollout["attribution", "policy", "observation"].shape == rollout["observation"].shape
    assert rollout["attribution", "value", "completeness_delta"].shape == rollout.batch_size
    # env.rollout keeps the caller's grad mode: the raw policy's outputs carry a graph there,
    # so the wrapped one's do too; the attributions never do
    assert rollout["action"].requires_grad == plain["action"].requires_grad
    assert not any(v.requires_grad for v in rollout["attribution"].values(True, True))
    policy = explained_policy()
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.inference_mode():
        evaluation = env.rollout(10, policy)  # as TorchRL's evaluators run it
    assert evaluation["attribution", "value", "observation"].abs().sum() > 0
    env.close()


def test_collector():
    policy = explained_policy()
    collector = Collector(make_double_pendulum, policy, frames_per_batch=32, total_frames=64)
    batches = list(collector)
    shutdown_collector(collector)
    assert len(batches) == 2
    for batch in batches:
        assert batch["attribution", "policy", "observation"].shape == batch["observation"].shape
    captum_check(shared_trunk_actor_critic(), batches[-1].reshape(-1)[:16])


def test_multi_sync_collector_two_workers():
    policy = explained_policy()
    collector = MultiSyncCollector(
        [make_double_pendulum] * 2, policy, frames_per_batch=40, total_frames=80
    )
    try:
        batches = []
        for i, batch in enumerate(collector):
            batches.append(batch)
            if i == 0:  # weights move as the raw module's: same keys, no prefix
                collector.update_policy_weights_(TensorDict.from_module(policy.wrapped))
    finally:
        shutdown_collector(collector)
    batch = batches[-1].reshape(-1)
    assert batch["attribution", "policy", "observation"].shape == (batch.numel(), OBS)
    captum_check(shared_trunk_actor_critic(), batch[:16])


def test_loss_module_and_gae_accept_the_wrapper():
    """ClipPPOLoss takes wrapped actor and critic; GAE (critic under vmap) is left alone."""
    from torchrl.modules import ValueOperator
    from torchrl.objectives import ClipPPOLoss
    from torchrl.objectives.value import GAE

    from models import gaussian_actor

    actor = gaussian_actor(action_dim=1)
    critic = ValueOperator(
        torch.nn.Sequential(torch.nn.Linear(OBS, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)),
        in_keys=["observation"],
    )
    policy = thr.Attributed(
        actor, "saliency", inputs=["observation"], targets={"policy": ActionLogProb()}
    )
    value = thr.Attributed(critic, "ig", inputs=["observation"], targets={"value": "state_value"})
    env = make_double_pendulum()
    with torch.no_grad():
        data = env.rollout(20, policy)
    env.close()
    GAE(gamma=0.99, lmbda=0.95, value_network=value)(data)
    assert data["advantage"].shape == data["next", "reward"].shape
    losses = ClipPPOLoss(policy, value)(data)
    (losses["loss_objective"] + losses["loss_critic"]).backward()
    assert all(p.grad is not None for p in actor.parameters())
    assert all(p.grad is not None for p in critic.parameters())
