"""The scalars of one evaluation rollout: the return and episode length, and each head's
feature shares, unless the head's attributions are at the float-rounding level of its output
(then only ``attribution/<head>/rounding_level = 1``: noise is not ranked); for each hidden
site attributed, each head's shares of its unit groups (:func:`site_scalars`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from tensordict import NestedKey, TensorDictBase
from torchrl.envs import EnvBase

from tdhook_rl.attribution.features import FeatureGroups, feature_groups
from tdhook_rl.attribution.noise import rounding_level
from tdhook_rl.core.keys import key_tuple
from tdhook_rl.evaluate import reward_and_done
from tdhook_rl.targets import Target, per_sample

__all__ = [
    "HeadShares",
    "episode_scalars",
    "head_shares",
    "scalar_name",
    "site_scalars",
    "slug",
    "unit_groups",
]


def slug(text: str) -> str:
    """``text`` as one part of a scalar name: ``"policy 0"`` -> ``"policy_0"``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def scalar_name(*parts: str) -> str:
    """``"attribution/policy_0/agent1/x"``: each part slugged, a ``/`` inside a row name
    (``"agent1/x"``) kept as a level of the name."""
    return "/".join(slug(p) for part in parts for p in part.split("/"))


def episode_scalars(env: EnvBase, rollout: TensorDictBase) -> dict[str, float]:
    """``eval/return`` and ``eval/episode_length``: means over the episodes that finished
    inside the rollout, else the per-copy sum over the rollout and its length."""
    reward, done = reward_and_done(env, rollout)
    ep_id = done.long().cumsum(-1) - done.long()
    if not int(done.sum()):
        return {
            "eval/return": float(reward.sum(-1).mean()),
            "eval/episode_length": float(reward.shape[-1]),
        }
    returns, lengths = [], []
    for row_reward, row_done, row_id in zip(
        reward.reshape(-1, reward.shape[-1]),
        done.reshape(-1, done.shape[-1]),
        ep_id.reshape(-1, ep_id.shape[-1]),
        strict=True,
    ):
        for e in range(int(row_done.sum())):
            mask = row_id == e
            returns.append(float(row_reward[mask].sum()))
            lengths.append(float(mask.sum()))
    return {
        "eval/return": sum(returns) / len(returns),
        "eval/episode_length": sum(lengths) / len(lengths),
    }


@dataclass
class HeadShares:
    """One head's attribution summary on one rollout.

    Attributes:
        shares: ``{row name: share}`` (empty when ``rounding`` is set).
        rounding: the attributions are at the float-rounding level of the head's output
            (:func:`~tdhook_rl.attribution.noise.rounding_level`); ``None`` when the head's
            value could not be read back from the rollout.
        mean_abs: the mean over samples of the summed |attribution|.
        output_scale: the mean |value| of the head (``nan`` when unknown).
    """

    shares: dict[str, float]
    rounding: bool | None
    mean_abs: float
    output_scale: float


def head_shares(
    rollout: TensorDictBase,
    targets: Mapping[str, Target],
    input_key: NestedKey,
    groups: FeatureGroups,
    out_key: NestedKey = "attribution",
) -> dict[str, HeadShares]:
    """Each head's shares of the first input's mean |attribution| on ``rollout``, or its
    rounding-level flag.

    The head's own value, needed to tell a measurement from rounding, is the bound target
    read back from the rollout (which holds what the module wrote at every step).
    """
    flat = rollout.reshape(-1)  # (*batch) -> (N,); sub-TensorDicts keep their agent dims
    out: dict[str, HeadShares] = {}
    for head, target in targets.items():
        a = flat.get((*key_tuple(out_key), head, *key_tuple(input_key))).detach()
        mean_abs = float(a.abs().reshape(a.shape[0], -1).sum(-1).double().mean())
        try:
            with torch.no_grad():
                value = per_sample(target(flat, flat), flat.batch_size, target)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError):
            value = None  # e.g. a callable target reading a key the rollout lacks
        if value is None:
            rounding, scale = None, float("nan")
        else:
            rounding = rounding_level(a, value, 1)
            scale = float(value.detach().abs().double().mean())
        shares = {}
        if not rounding:
            shares = dict(zip(groups.names, groups.shares(a).tolist(), strict=True))
        out[head] = HeadShares(shares, rounding, mean_abs, scale)
    return out


def unit_groups(shape: tuple[int, ...]) -> FeatureGroups:
    """The rows a hidden site's activation (per-sample ``shape``) is logged in: one per unit
    (``"unit 3"``) up to :data:`~tdhook_rl.attribution.features.MAX_ROWS` units, else one per
    channel of a conv activation ``[C, H, W]`` (``"channel 2"``), a grid of blocks of a
    single-channel one, or contiguous blocks of units (``"units 0-63"``).

    Examples:
        >>> unit_groups((3,)).names
        ['unit 0', 'unit 1', 'unit 2']
        >>> unit_groups((256,)).names[:2]
        ['units 0-3', 'units 4-7']
        >>> unit_groups((4, 5, 5)).names[:2]
        ['channel 0', 'channel 1']
    """
    groups = feature_groups(shape)
    if groups.kind == "feature":
        names = [f"unit {i}" for i in range(len(groups.names))]
        return FeatureGroups(names, "feature", groups.shape)
    if groups.kind == "block":
        names = [f"units {n[1:]}" for n in groups.names]  # "f0-63" -> "units 0-63"
        return FeatureGroups(names, "block", groups.shape, groups.block)
    return groups


def site_scalars(
    rollout: TensorDictBase,
    targets: Mapping[str, Target],
    sites: Mapping[str, FeatureGroups],
    top_units: int | None = None,
    out_key: NestedKey = "attribution",
) -> dict[str, float]:
    """``attribution/<head>/<site>/<unit group>``: each unit group's share of the mean
    |attribution| to each hidden site, per head (summing to 1 over a site's groups).

    Heads at the float-rounding level of their output are left out (as for the input's
    feature shares). With ``top_units=k``, only the ``k`` largest groups of each site and
    head are logged, named by their unit, and the rest as ``<site>/other``.

    Args:
        rollout: the evaluation rollout, with the attributions under ``out_key``.
        targets: ``{head: target}`` bound to the module.
        sites: ``{site name: its unit groups}`` (:func:`unit_groups`).
        top_units: log only this many groups per site and head (``None``: all).
        out_key: the attributions' root key.
    """
    scalars: dict[str, float] = {}
    for site, groups in sites.items():
        for head, summary in head_shares(rollout, targets, site, groups, out_key).items():
            shares = summary.shares
            if top_units is not None and len(shares) > top_units:
                ranked = sorted(shares.items(), key=lambda item: -item[1])
                kept = dict(ranked[:top_units])
                kept["other"] = sum(v for _, v in ranked[top_units:])
                shares = kept
            for name, value in shares.items():
                scalars[scalar_name("attribution", head, site, name)] = value
    return scalars
