"""Multi-agent rollouts for the probes: every agent of a group as one environment copy, so that
a probe reads each agent's hidden units against that agent's own state, pooled over agents."""

from __future__ import annotations

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase

from tdhook_rl.core.keys import as_key, key_tuple

__all__ = ["agents_as_copies"]


def agents_as_copies(
    rollout: TensorDictBase,
    group: NestedKey = "agents",
    *,
    activation_key: NestedKey = "activations",
) -> TensorDict:
    """Rearranges a multi-agent rollout ``[*batch, T]`` so that each agent is an environment
    copy: ``[*batch, n_agents, T]``.

    The group's entries (``(group, "observation")``, ...) move to the root, its ``"next"``
    entries under ``"next"``; the recorded activations keep their per-agent slice (a site
    recorded as ``[*batch, T, n_agents, *f]``, see :class:`~tdhook_rl.Recorded`), and an
    activation without an agent dimension (a centralised network run once for all agents) is
    repeated for every agent. Episode ends (``("next", "done")``) are repeated per agent and
    collector trajectory ids are made unique per agent, so :func:`fit_probes` splits
    episodes as before (an agent's episode is held out or kept whole).

    Args:
        rollout: ``env.rollout`` or collector data with a ``group`` sub-TensorDict whose last
            batch dimension is the agent (TorchRL's multi-agent layout).
        group: the agent group's key.
        activation_key: the root key of the recorded activations.

    Returns:
        A TensorDict ``[*batch, n_agents, T]``.

    Examples:
        >>> T, N = 5, 3
        >>> rollout = TensorDict(
        ...     {("agents", "observation"): torch.randn(T, N, 2),
        ...      ("activations", "h1"): torch.randn(T, N, 8),
        ...      ("next", "done"): torch.zeros(T, 1, dtype=torch.bool)},
        ...     batch_size=[T],
        ... )
        >>> rollout["agents"].batch_size = torch.Size([T, N])
        >>> per_agent = agents_as_copies(rollout)
        >>> per_agent.batch_size, per_agent["activations", "h1"].shape
        (torch.Size([3, 5]), torch.Size([3, 5, 8]))
    """
    group_key = key_tuple(as_key(group, "group"))
    agents = rollout.get(group_key, None)
    if not isinstance(agents, TensorDictBase) or agents.batch_dims != rollout.batch_dims + 1:
        raise KeyError(
            f"agents_as_copies needs a sub-TensorDict {group_key!r} batched [*batch, T, "
            f"n_agents] in the rollout (TorchRL's multi-agent layout); the rollout holds "
            f"{sorted(str(k) for k in rollout.keys())}"
        )
    batch, n = rollout.batch_size, agents.batch_size[-1]
    per_agent = (*batch[:-1], n, batch[-1])  # the agent before the time dimension

    def move(value: torch.Tensor) -> torch.Tensor:  # [*batch, T, n, *f] -> [*batch, n, T, *f]
        return value.movedim(len(batch), len(batch) - 1)

    def repeat(value: torch.Tensor) -> torch.Tensor:  # [*batch, T, *f] -> [*batch, n, T, *f]
        return value.unsqueeze(len(batch) - 1).expand(*per_agent, *value.shape[len(batch) :])

    out = TensorDict(batch_size=per_agent, device=rollout.device)
    for key, value in agents.items(include_nested=True, leaves_only=True):
        out.set(key, move(value))
    nested = rollout.get(("next", *group_key), None)
    if isinstance(nested, TensorDictBase):
        for key, value in nested.items(include_nested=True, leaves_only=True):
            out.set(("next", *key_tuple(key)), move(value))
    root = key_tuple(as_key(activation_key, "activation_key"))
    activations = rollout.get(root, None)
    if isinstance(activations, TensorDictBase):
        for key, value in activations.items(include_nested=True, leaves_only=True):
            per_agent_site = value.ndim > len(batch) + 1 and value.shape[len(batch)] == n
            out.set((*root, *key_tuple(key)), move(value) if per_agent_site else repeat(value))
    done = rollout.get(("next", "done"), None)
    if done is not None and ("next", "done") not in out.keys(include_nested=True):
        out.set(("next", "done"), repeat(done))
    traj = rollout.get(("collector", "traj_ids"), None)
    if traj is not None:
        agent = torch.arange(n, device=traj.device).view(n, 1)
        out.set(("collector", "traj_ids"), repeat(traj) * n + agent)
    return out
