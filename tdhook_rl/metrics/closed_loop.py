"""Closed-loop deletion: the policy acts for whole episodes on observations whose top-k
features (by an importance score, e.g. the mean ``|attribution|`` over a rollout) are
replaced by a baseline, every k and every random ordering in one batched environment; the
mean return per k is read against random orderings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.core.keys import key_tuple
from tdhook_rl.metrics._common import check_k, generator, random_ranks, ranks


class MaskedInput(TensorDictModuleBase):
    """Runs ``policy`` on a copy of its input where ``key``'s masked features are replaced
    by ``baseline``; the outputs go back into the caller's TensorDict, whose ``key`` keeps
    the true observation (so a rollout records what the environment gave).

    Args:
        policy: the TensorDict policy.
        key: the observation entry to mask.
        mask: boolean, broadcastable to ``td[key]`` (e.g. ``(*env_batch, *feature)``: one
            mask per environment copy); True where the feature is removed.
        baseline: the value of a removed feature (a scalar or a broadcastable tensor).

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = TensorDictModule(lambda x: x.sum(-1, keepdim=True), ["observation"], ["action"])
        >>> masked = MaskedInput(net, "observation", torch.tensor([True, False]))
        >>> out = masked(TensorDict(observation=torch.ones(3, 2), batch_size=[3]))
        >>> out["action"].squeeze(-1), out["observation"][0]
        (tensor([1., 1., 1.]), tensor([1., 1.]))
    """

    def __init__(
        self,
        policy: TensorDictModuleBase,
        key: NestedKey,
        mask: torch.Tensor,
        baseline: float | torch.Tensor = 0.0,
    ) -> None:
        super().__init__()
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got dtype {mask.dtype}")
        self.policy = policy
        self.key = key
        self.register_buffer("mask", mask)
        self.register_buffer("baseline", torch.as_tensor(baseline))
        self.in_keys = list(policy.in_keys)
        self.out_keys = list(policy.out_keys)

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        seen = tensordict.clone(False)  # shallow: the caller's entries are not copied
        value = seen.get(self.key)
        seen.set(self.key, torch.where(self.mask, self.baseline.to(value), value))
        out = self.policy(seen, *args, **kwargs)
        for key in self.out_keys:
            tensordict.set(key, out.get(key))
        return tensordict


@dataclass
class ClosedLoopResult:
    """Episode returns with the top-k features masked, per k, and the chance level.

    Attributes:
        ks: the numbers of masked features, ``(K,)``.
        returns: the mean return per k with the features masked in the score's order, ``(K,)``.
        random: the mean return per k with random orderings (mean over orderings), ``(K,)``.
        episode_returns: ``(K, episodes)``, the first episode of each environment copy.
        random_episode_returns: ``(K, n_random, episodes)``.
        orderings: feature ranks (0: masked first), the score's then the random ones,
            ``(1 + n_random, F)``.
        perturbation: the perturbation model, in words, with its seeds.
    """

    ks: torch.Tensor
    returns: torch.Tensor
    random: torch.Tensor
    episode_returns: torch.Tensor
    random_episode_returns: torch.Tensor
    orderings: torch.Tensor
    perturbation: str


def mean_abs_attribution(
    td: TensorDictBase,
    head: str,
    key: NestedKey = "observation",
    out_key: NestedKey = "attribution",
) -> torch.Tensor:
    """The mean ``|attribution|`` of ``head`` to ``key`` over every step of ``td`` (a rollout
    written by :class:`~tdhook_rl.Attributed`; steps whose ``valid`` flag is False are left
    out), flattened to ``(F,)``: the importance score of :func:`closed_loop_deletion`.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({("attribution", "policy", "observation"): torch.tensor(
        ...     [[1.0, -2.0], [3.0, 0.0]])}, batch_size=[2])
        >>> mean_abs_attribution(td, "policy")
        tensor([2., 1.])
    """
    root = (*key_tuple(out_key), head)
    value = td.get((*root, *key_tuple(key)), None)
    if not isinstance(value, torch.Tensor):
        raise KeyError(f"no attribution of head {head!r} to {key!r} in the TensorDict at {root}")
    flat = value.detach().abs().reshape(td.batch_size.numel(), -1)
    valid = td.get((*root, "valid"), None)
    if isinstance(valid, torch.Tensor):
        flat = flat[valid.reshape(-1)]
    if flat.shape[0] == 0:
        raise ValueError(f"no valid step of head {head!r} to average over")
    return flat.mean(0)


def closed_loop_deletion(
    make_env: Callable[[int], EnvBase],
    policy: TensorDictModuleBase,
    scores: torch.Tensor,
    *,
    ks: Sequence[int] | None = None,
    key: NestedKey = "observation",
    baseline: float | torch.Tensor = 0.0,
    episodes: int = 4,
    max_steps: int = 200,
    n_random: int = 4,
    seed: int = 0,
    exploration: ExplorationType = ExplorationType.DETERMINISTIC,
) -> ClosedLoopResult:
    """Masks the top-k features of ``key`` by ``scores`` for whole episodes and measures the
    return, for every k and ``n_random`` random orderings at once: one batched environment
    of ``len(ks) * (1 + n_random) * episodes`` copies, one ``env.rollout``.

    Each copy's return is that of its first episode (rewards up to its first ``done``;
    episodes still running after ``max_steps`` are truncated there).

    Args:
        make_env: ``n -> env`` with ``batch_size == (n,)`` (e.g. ``agent.make_env``).
        policy: the policy (the raw one; an ``Attributed`` policy works, but pays for its pass).
        scores: importance per feature of ``key``, ``(F,)`` or the feature shape: the
            features masked first have the largest score (see :func:`mean_abs_attribution`).
        ks: numbers of masked features, each in ``0..F`` (default ``0..F``).
        key: the observation entry the policy reads.
        baseline: what a masked feature becomes.
        episodes: environment copies per k and ordering.
        max_steps: steps of the rollout.
        n_random: random orderings (the chance curve).
        seed: seeds the environment (``env.set_seed``) and the random orderings.
        exploration: the policy's exploration type during the rollout.

    Returns:
        A :class:`ClosedLoopResult`.

    Examples:
        >>> from tdhook_rl import agents
        >>> agent = agents.load("double_pendulum")
        >>> scores = torch.arange(9.0)   # e.g. mean_abs_attribution(rollout, "policy")
        >>> result = closed_loop_deletion(lambda n: agent.make_env(n, seed=0), agent.actor,
        ...                               scores, ks=[0, 9], episodes=2, max_steps=20,
        ...                               n_random=1)
        >>> result.returns.shape, result.random.shape
        (torch.Size([2]), torch.Size([2]))
    """
    scores = torch.as_tensor(scores).detach().reshape(-1)
    n_features = scores.numel()
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores have non-finite values (NaN or inf): no ordering")
    k = list(range(n_features + 1)) if ks is None else [check_k(int(v), n_features) for v in ks]
    if not k:
        raise ValueError("ks is empty: give at least one number of features")
    for name, value in (("episodes", episodes), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be an int >= 0, got {n_random!r}")
    n_order, n_k = 1 + n_random, len(k)
    n = n_k * n_order * episodes
    env = make_env(n)
    if not isinstance(env, EnvBase) or tuple(env.batch_size) != (n,):
        got = getattr(env, "batch_size", type(env).__name__)
        raise ValueError(
            f"closed_loop_deletion needs a batched environment: make_env({n}) must return "
            f"an EnvBase with batch_size ({n},), got {got}"
        )
    orderings = torch.cat(
        [ranks(scores)[None], random_ranks((n_random,), n_features, generator(seed), "cpu")]
    )  # (1 + R, F)
    masked = orderings[None] < torch.tensor(k)[:, None, None]  # (K, 1 + R, F)
    feature = env.observation_spec[key].shape[len(env.batch_size) :]
    if feature.numel() != n_features:
        raise ValueError(
            f"scores have {n_features} entries, {key!r} has {feature.numel()} features "
            f"(shape {tuple(feature)})"
        )
    # (K, 1 + R, F) -> (K, 1 + R, episodes, F) -> (n, *feature): copy c gets condition c // E
    mask = masked[:, :, None].expand(n_k, n_order, episodes, n_features).reshape(n, *feature)
    wrapped = MaskedInput(policy, key, mask.to(env.device), baseline)
    env.set_seed(seed)
    with set_exploration_type(exploration), torch.no_grad():
        rollout = env.rollout(max_steps, wrapped, break_when_any_done=False)
    returns = first_episode_returns(rollout).reshape(n_k, n_order, episodes)
    mean = returns.mean(-1)
    return ClosedLoopResult(
        ks=torch.tensor(k),
        returns=mean[:, 0],
        random=mean[:, 1:].mean(1) if n_random else torch.full_like(mean[:, 0], float("nan")),
        episode_returns=returns[:, 0],
        random_episode_returns=returns[:, 1:],
        orderings=orderings,
        perturbation=(
            f"top-k features of {key!r} by score replaced by {baseline} in the observation "
            f"the policy sees, whole episodes of <= {max_steps} steps, {episodes} episodes "
            f"per k, env seed={seed}; chance: {n_random} random orderings, seed={seed}"
        ),
    )


def first_episode_returns(rollout: TensorDictBase) -> torch.Tensor:
    """The summed reward of each copy's first episode in a rollout ``(*batch, T)``: steps up
    to and including the first ``done``. Returns ``(*batch)``.

    Examples:
        >>> from tensordict import TensorDict
        >>> done = torch.tensor([[False, True, False], [False, False, False]])[..., None]
        >>> td = TensorDict({("next", "reward"): torch.ones(2, 3, 1), ("next", "done"): done},
        ...                 batch_size=[2, 3])
        >>> first_episode_returns(td)
        tensor([2., 3.])
    """
    reward = rollout.get(("next", "reward"))
    done = rollout.get(("next", "done"))
    reward = reward.reshape(*rollout.batch_size, -1).sum(-1)  # (*batch, T)
    done = done.reshape(*rollout.batch_size, -1).any(-1).to(torch.int64)
    before = done.cumsum(-1) - done  # dones strictly before each step
    return (reward * (before == 0)).sum(-1)
