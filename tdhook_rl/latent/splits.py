"""How probing data is cut: into episodes (never split between train and test), into label
columns, and into batches streamed from a TensorDict or a replay buffer.

Episodes come from ``("collector", "traj_ids")`` when the data has it (collector batches),
else from ``("next", "done")`` along the time dimension (``env.rollout`` results, shaped
``[*env_batch, T]`` with ``td.names[-1] == "time"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase

from tdhook_rl.targets import Index, as_targets, per_sample

__all__ = ["LabelSpec", "episode_ids", "episode_split", "labels_from"]

#: A label column: a readout as :func:`tdhook_rl.targets.as_target` parses it (a key,
#: ``(key, index)`` meaning :class:`~tdhook_rl.targets.Index`, a callable ``td -> Tensor``), or
#: a tensor shaped like the batch.
LabelSpec: TypeAlias = (
    NestedKey | tuple | Index | Callable[[TensorDictBase], torch.Tensor] | torch.Tensor
)

TRAJ_IDS = ("collector", "traj_ids")
DONE = ("next", "done")
_M32 = 0xFFFFFFFF


def episode_ids(td: TensorDictBase, *, time_dim: int | None = None) -> torch.Tensor:
    """Returns one episode id per step, unique across environment copies.

    The ids are ``("collector", "traj_ids")`` when present (``-1`` marks padding frames of
    some collectors), else they are counted from ``("next", "done")``: a step starts a new
    episode when it is the first of its row along time or follows a done step.

    Args:
        td: a rollout (``[*env_batch, T]``) or a collector batch (``[frames]``, ``[n_envs, T]``).
        time_dim: the time dimension; by default the one named ``"time"``, else the last one.

    Returns:
        A ``LongTensor`` shaped ``td.batch_size``.

    Examples:
        >>> done = torch.tensor([[0, 1, 0], [0, 0, 0]], dtype=torch.bool).unsqueeze(-1)
        >>> td = TensorDict({("next", "done"): done}, batch_size=[2, 3])
        >>> episode_ids(td)
        tensor([[0, 0, 1],
                [2, 2, 2]])
    """
    traj = td.get(TRAJ_IDS, None)
    if traj is not None:
        return _per_step(traj, td.batch_size, "('collector', 'traj_ids')").long()
    done = td.get(DONE, None)
    if done is None:
        raise KeyError(
            "episode ids need ('collector', 'traj_ids') or ('next', 'done') in the data, and it "
            "has neither; pass a rollout from env.rollout or a batch from a collector."
        )
    if td.batch_dims == 0:
        raise ValueError("episode ids need a time dimension; got a TensorDict with batch ().")
    done = _per_step(done, td.batch_size, "('next', 'done')").bool()
    dim = _time_dim(td, time_dim)
    rows = done.movedim(dim, -1)  # (*batch) -> (*others, T)
    moved_shape = rows.shape
    rows = rows.reshape(-1, moved_shape[-1])  # (E, T)
    starts = torch.ones_like(rows)
    starts[:, 1:] = rows[:, :-1]
    ids = starts.flatten().cumsum(0) - 1  # row-major: every row starts a new episode
    return ids.reshape(moved_shape).movedim(-1, dim)


def episode_split(
    td: TensorDictBase, held_out: float = 0.2, seed: int = 0, *, time_dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits steps into train and test without ever splitting an episode.

    ``round(held_out * n_episodes)`` episodes (at least one, and at least one left for
    training) go to the test part: those with the smallest seeded hash of their id, so the
    choice depends only on ``(episode id, seed)``. Steps with episode id ``-1`` (collector
    padding) are in neither part.

    Args:
        td: a rollout or collector batch (see :func:`episode_ids`).
        held_out: the fraction of episodes held out, in ``(0, 1)``.
        seed: seeds the hash.
        time_dim: see :func:`episode_ids`.

    Returns:
        ``(train_mask, test_mask)``, boolean tensors shaped ``td.batch_size``.

    Examples:
        >>> td = TensorDict({("collector", "traj_ids"): torch.tensor([0, 0, 1, 1, 2])}, [5])
        >>> train, test = episode_split(td, held_out=0.3)
        >>> int(test.sum()) in (1, 2), bool((train ^ test).all())
        (True, True)
    """
    check_held_out(held_out)
    ids = episode_ids(td, time_dim=time_dim)
    unique = ids.unique()
    unique = unique[unique >= 0]
    if unique.numel() < 2:
        raise ValueError(
            f"an episode split needs at least 2 episodes, found {unique.numel()} "
            f"({_id_source(td)}); record more steps or run several environment copies."
        )
    n_test = min(max(round(held_out * unique.numel()), 1), unique.numel() - 1)
    order = hashed_unit(unique, seed).argsort(stable=True)
    test = torch.isin(ids, unique[order[:n_test]])
    return (ids >= 0) & ~test, test


def check_held_out(held_out: float) -> None:
    if not isinstance(held_out, int | float) or not 0.0 < held_out < 1.0:
        raise ValueError(
            f"held_out is the fraction of episodes held out for testing and must lie in "
            f"(0, 1); got {held_out!r}. Use e.g. held_out=0.2."
        )


def hashed_unit(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded hash of integer ids, uniform in ``[0, 1)`` (float64), on the ids' device."""
    ids = ids.long()
    lo, hi = ids & _M32, (ids >> 32) & _M32
    s = _hash32(torch.full_like(lo, (seed & _M32) ^ 0x9E3779B9))
    return _hash32(_hash32(lo ^ s) ^ hi).double() / 2.0**32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    # x < 2**32 and the constant < 2**27: the products fit in int64.
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


class StreamingEpisodeIds:
    """Episode ids for consecutive batches of one stream (e.g. slices of a replay buffer).

    Collector ids are used as they are. Ids counted from done flags are offset so they stay
    unique across batches; for flat ``[frames]`` batches an episode left open at the end of a
    batch continues into the next one.
    """

    def __init__(self) -> None:
        self.next_id = 0
        self.open = False

    def __call__(self, td: TensorDictBase) -> torch.Tensor:
        if td.get(TRAJ_IDS, None) is not None:
            return episode_ids(td)
        ids = episode_ids(td)
        carry = self.open and td.batch_dims == 1
        ids = ids + (self.next_id - 1 if carry else self.next_id)
        self.next_id = int(ids.max()) + 1
        if td.batch_dims == 1:
            self.open = not bool(td.get(DONE).reshape(td.batch_size[0], -1)[-1].any())
        return ids


def labels_from(td: TensorDictBase, spec: Mapping[str, LabelSpec]) -> TensorDict:
    """Takes label columns from a rollout: one tensor per name, shaped ``td.batch_size``.

    Args:
        td: the rollout or batch.
        spec: ``{name: column}`` where a column is read as a target is
            (:func:`tdhook_rl.targets.as_target`): a key (``"reward"``, ``("next", "done")``,
            ``("sim", "tip_height")``: its trailing size-1 dimension is dropped), a key
            followed by integer indices or an :class:`~tdhook_rl.targets.Index` for one column
            of a vector entry (``("observation", 3)``, ``(("sim", "qpos"), 1)``), a callable
            ``td -> Tensor``, or a tensor shaped like the batch.

    Returns:
        A ``TensorDict`` with ``td``'s batch size and one entry per name.

    Examples:
        >>> td = TensorDict(observation=torch.arange(6.0).reshape(3, 2), batch_size=[3])
        >>> spec = {"x1": ("observation", 1), "norm": lambda t: t["observation"].norm(dim=-1)}
        >>> labels_from(td, spec)["x1"]
        tensor([1., 3., 5.])
    """
    if not isinstance(spec, Mapping) or not spec:
        raise TypeError(
            f"labels must be a non-empty mapping {{name: key | (key, index) | callable}}, "
            f"got {spec!r}"
        )
    out = TensorDict(batch_size=td.batch_size, device=td.device)
    for name, column in spec.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"label names must be non-empty strings, got {name!r}")
        out.set(name, _label(td, name, column))
    return out


def _label(td: TensorDictBase, name: str, column: Any) -> torch.Tensor:
    who = f"label {name!r}"
    if isinstance(column, torch.Tensor):
        return per_sample(column, td.batch_size, f"{who} (the given tensor)")
    target = as_targets({name: column}, kind="label")[name]
    if target.needs_module:
        raise TypeError(
            f"{who} is {target!r}, which reads the module; a label is read from the data: "
            "a key, (key, index), Index(key, i) or a callable td -> Tensor"
        )
    return per_sample(target(td, td), td.batch_size, target)


def _per_step(value: torch.Tensor, batch: torch.Size, what: str) -> torch.Tensor:
    if value.shape == (*batch, 1):
        value = value.squeeze(-1)
    if value.shape != batch:
        raise ValueError(f"{what} has shape {tuple(value.shape)}, expected {tuple(batch)}")
    return value


def _time_dim(td: TensorDictBase, time_dim: int | None) -> int:
    if time_dim is not None:
        if not -td.batch_dims <= time_dim < td.batch_dims:
            raise ValueError(f"time_dim={time_dim} is out of range for batch {td.batch_size}")
        return time_dim % td.batch_dims
    try:
        names = list(td.names)
    except Exception:  # some TensorDict types have no names
        names = []
    return names.index("time") if "time" in names else td.batch_dims - 1


def _id_source(td: TensorDictBase) -> str:
    if td.get(TRAJ_IDS, None) is not None:
        return "from ('collector', 'traj_ids')"
    return "counted from ('next', 'done')"


def split_batches(
    data: Any,
    labels: Mapping[str, LabelSpec],
    keys: list[NestedKey],
    held_out: float,
    seed: int,
    batch_size: int | None,
    valid: NestedKey | None = None,
) -> Callable[[], Iterator[tuple[TensorDictBase, TensorDictBase, torch.Tensor]]]:
    """Returns a function that starts one pass over ``data``, yielding flat
    ``(features, labels, test_mask)`` triples: ``features`` holds ``keys``, ``labels`` comes
    from :func:`labels_from` on the unflattened batch; steps outside both parts are dropped.

    A TensorDict is split exactly (:func:`episode_split`) and cut into flat chunks of
    ``batch_size`` steps (one chunk if ``None``). A replay buffer is read in slices
    ``rb[i:i + batch_size]`` (default 4096); an episode is held out when the seeded hash of
    its id is below ``held_out``, so the split is the same whichever slice holds the episode.
    Steps whose boolean entry ``valid`` is False (not measured, e.g. a collector's random
    frames) are dropped too, where ``data`` holds that entry.
    """
    check_held_out(held_out)
    if isinstance(data, TensorDictBase):
        train, test = episode_split(data, held_out, seed)
        keep = train | test
        if valid is not None and valid in data.keys(True):
            keep = keep & data.get(valid).reshape(keep.shape).bool()
        flat_y = labels_from(data, labels)[keep]  # (*batch) -> (n,)
        flat_x, test = data.select(*keys)[keep], test[keep]
        step = batch_size or max(flat_x.shape[0], 1)

        def td_pass() -> Iterator[tuple[TensorDictBase, TensorDictBase, torch.Tensor]]:
            for i in range(0, flat_x.shape[0], step):
                yield flat_x[i : i + step], flat_y[i : i + step], test[i : i + step]

        return td_pass
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            f"data must be a TensorDict or a torchrl ReplayBuffer, got {type(data).__name__}"
        )
    if any(isinstance(column, torch.Tensor) for column in labels.values()):
        raise TypeError(
            "a label given as a tensor cannot be aligned with replay-buffer slices; store it "
            "in the buffer and name its key, or give a callable."
        )
    step = batch_size or 4096

    def buffer_pass() -> Iterator[tuple[TensorDictBase, TensorDictBase, torch.Tensor]]:
        ids_of = StreamingEpisodeIds()
        for i in range(0, len(data), step):
            batch = data[i : i + step]
            ids = ids_of(batch)
            keep = ids >= 0
            if valid is not None and valid in batch.keys(True):
                keep = keep & batch.get(valid).reshape(keep.shape).bool()
            test = hashed_unit(ids, seed) < held_out
            yield batch.select(*keys)[keep], labels_from(batch, labels)[keep], test[keep]

    return buffer_pass
