"""Labels read from the future of a rollout: what a step's trajectory does ``k`` steps later.

A rollout TensorDict (``env.rollout``, a collector batch) holds at step ``t`` the state it
acted in and, under ``"next"``, the state it led to. The state ``k >= 1`` steps after step
``t``'s is ``("next", key)`` at step ``t + k - 1``. A label that would read past the end of
its episode (a ``done``, ``terminated`` or ``truncated`` flag on a step before ``t + k - 1``)
or past the end of the data is marked invalid: no label crosses an episode end.

The time dimension is the one named ``"time"`` (``env.rollout`` names it), else the last.
"""

from __future__ import annotations

import torch
from tensordict import NestedKey, TensorDictBase

__all__ = ["episode_ends", "future", "steps_until"]

_FLAGS = (("next", "done"), ("next", "terminated"), ("next", "truncated"))


def _time_dim(td: TensorDictBase, time_dim: int | None) -> int:
    if td.batch_dims == 0:
        raise ValueError("future labels need a time dimension; got a TensorDict with batch ()")
    if time_dim is None:
        names = td.names if td._has_names() else [None] * td.batch_dims
        time_dim = names.index("time") if "time" in names else td.batch_dims - 1
    if not -td.batch_dims <= time_dim < td.batch_dims:
        raise ValueError(f"time_dim={time_dim} is not a batch dimension of {td.batch_size}")
    return time_dim % td.batch_dims


def episode_ends(td: TensorDictBase, *, time_dim: int | None = None) -> torch.Tensor:
    """The steps after which an episode ends: ``done | terminated | truncated`` of ``"next"``
    (those present), bool shaped ``td.batch_size``.

    Examples:
        >>> from tensordict import TensorDict
        >>> done = torch.tensor([[0], [1], [0]], dtype=torch.bool)
        >>> episode_ends(TensorDict({("next", "done"): done}, [3])).tolist()
        [False, True, False]
    """
    _time_dim(td, time_dim)
    found = [td.get(k) for k in _FLAGS if k in td.keys(True)]
    if not found:
        raise KeyError(
            "the rollout has no ('next', 'done'), ('next', 'terminated') or ('next', "
            "'truncated'): future labels need the episode ends; pass an env.rollout result"
        )
    end = torch.zeros(td.batch_size, dtype=torch.bool, device=td.device)
    for flag in found:
        end |= flag.reshape(td.batch_size).bool()
    return end


def _episode_index(end: torch.Tensor) -> torch.Tensor:
    """``[..., T]`` -> the number of episode ends strictly before each step (same episode
    <=> same count)."""
    count = end.long().cumsum(-1)
    return count - end.long()


def future(
    td: TensorDictBase, key: NestedKey, k: int = 1, *, time_dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The value of ``key`` ``k`` steps after each step's state: ``("next", key)`` at step
    ``t + k - 1``.

    Args:
        td: a rollout ``[*batch, T]`` with ``("next", key)`` and the episode flags.
        key: the entry to read (under ``"next"``), e.g. ``"tip_height"``.
        k: how many steps ahead (``>= 1``; ``k = 1`` is the step's own next state).
        time_dim: the time dimension (see the module's docstring).

    Returns:
        ``(values, valid)``: ``values`` shaped like ``td["next", key]`` (zeros where not
        valid), ``valid`` bool ``td.batch_size``: False where step ``t + k - 1`` is past the
        data or in a later episode.

    Examples:
        >>> from tensordict import TensorDict
        >>> x = torch.arange(5.0).unsqueeze(-1)  # next state of steps 0..4
        >>> done = torch.tensor([0, 1, 0, 0, 0], dtype=torch.bool).unsqueeze(-1)
        >>> td = TensorDict({("next", "x"): x, ("next", "done"): done}, [5])
        >>> values, valid = future(td, "x", 2)
        >>> values.squeeze(-1).tolist(), valid.tolist()
        ([1.0, 0.0, 3.0, 4.0, 0.0], [True, False, True, True, False])
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k is the number of steps ahead, an int >= 1; got {k!r}")
    dim = _time_dim(td, time_dim)
    nxt = ("next", *((key,) if isinstance(key, str) else key))
    if nxt not in td.keys(True):
        raise KeyError(f"the rollout has no {nxt!r}: future labels read the next states")
    value = td.get(nxt)
    end = episode_ends(td).movedim(dim, -1)  # (*others, T)
    t_len = end.shape[-1]
    episode = _episode_index(end)
    src = torch.arange(t_len, device=end.device) + k - 1  # (T,) the step read for each t
    inside = src < t_len
    src = src.clamp(max=t_len - 1)
    valid = inside & (episode.gather(-1, src.expand_as(episode)) == episode)
    moved = value.movedim(dim, td.batch_dims - 1)  # time last among the batch dims
    idx = src.view(*(1,) * (td.batch_dims - 1), t_len, *(1,) * (value.ndim - td.batch_dims))
    picked = moved.gather(td.batch_dims - 1, idx.expand_as(moved))
    mask = valid.view(*valid.shape, *(1,) * (value.ndim - td.batch_dims))
    picked = torch.where(mask, picked, torch.zeros((), dtype=picked.dtype))
    return picked.movedim(td.batch_dims - 1, dim), valid.movedim(-1, dim)


def steps_until(
    td: TensorDictBase,
    event: torch.Tensor,
    *,
    horizon: int | None = None,
    time_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How many steps from each step's state until ``event`` first holds in its episode.

    Args:
        td: the rollout ``[*batch, T]`` (for its episode flags).
        event: bool ``td.batch_size`` (or with a trailing 1): whether the event holds in the
            *next* state of each step, e.g. ``td["next", "tip_height"] <= 1.0``.
        horizon: cap: where the event does not come within ``horizon`` steps but the episode
            goes on that long, the label is ``horizon`` (valid); ``None``: no cap.
        time_dim: the time dimension (see the module's docstring).

    Returns:
        ``(steps, valid)``: ``steps`` float ``td.batch_size`` (``j >= 1``: the event holds
        in the state ``j`` steps later; ``nan`` where not valid), ``valid`` False where
        the episode or the data ends before the event (and before ``horizon`` steps):
        censored, unknown.

    Examples:
        >>> from tensordict import TensorDict
        >>> done = torch.tensor([0, 0, 1, 0, 0], dtype=torch.bool).unsqueeze(-1)
        >>> td = TensorDict({("next", "done"): done}, [5])
        >>> event = torch.tensor([False, False, True, False, False])
        >>> steps, valid = steps_until(td, event)
        >>> steps.tolist()[:3], valid.tolist()
        ([3.0, 2.0, 1.0], [True, True, True, False, False])
    """
    if horizon is not None and (not isinstance(horizon, int) or horizon < 1):
        raise ValueError(f"horizon is a number of steps >= 1 or None; got {horizon!r}")
    dim = _time_dim(td, time_dim)
    if not isinstance(event, torch.Tensor) or event.numel() != td.batch_size.numel():
        raise ValueError(
            f"event must be a bool tensor shaped like the rollout's batch {tuple(td.batch_size)}"
            f", got {tuple(event.shape) if isinstance(event, torch.Tensor) else type(event)}"
        )
    hit = event.reshape(td.batch_size).bool().movedim(dim, -1)  # (*others, T)
    end = episode_ends(td).movedim(dim, -1)
    t_len = end.shape[-1]
    episode = _episode_index(end)
    t = torch.arange(t_len, device=end.device).expand_as(hit)
    first = torch.where(hit, t, t_len)  # the next event at or after t (reverse cummin)
    first = first.flip(-1).cummin(-1).values.flip(-1)
    found = first < t_len
    same = episode.gather(-1, first.clamp(max=t_len - 1)) == episode
    steps = (first - t + 1).double()
    valid = found & same
    if horizon is not None:
        far = t + horizon - 1
        lasts = (far < t_len) & (episode.gather(-1, far.clamp(max=t_len - 1)) == episode)
        capped = lasts & (~valid | (steps > horizon))
        steps = torch.where(capped, float(horizon), steps)
        valid = valid | capped
    steps = torch.where(valid, steps, torch.nan).float()
    return steps.movedim(-1, dim), valid.movedim(-1, dim)
