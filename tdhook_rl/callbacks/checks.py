"""What :class:`~tdhook_rl.callbacks.InterpretabilityCallback` checks when it is built, against
the policy and the environment: one dry call of the wrapped module on ``env.reset()``, then
the feature names against the input it read, the probe labels against what it wrote, and the
interventions' sites against the module. Each failure is a ``ValueError`` (or ``KeyError``
for a missing key) that names what is wrong and what exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import AttributionMethod
from tdhook_rl.attribution.features import FeatureGroups, feature_groups
from tdhook_rl.callbacks.options import AttributionSpec, Interventions, ProbeSpec
from tdhook_rl.callbacks.scalars import unit_groups
from tdhook_rl.core.keys import held_keys, key_tuple
from tdhook_rl.latent.intervened import Intervened
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.latent.splits import labels_from
from tdhook_rl.targets import FromCallable, as_target

__all__ = [
    "agent_dims",
    "check_interventions",
    "check_labels",
    "dry_call",
    "heads_description",
    "input_groups",
    "site_groups",
    "wrap",
]

PREFIX = "InterpretabilityCallback"


def wrap(
    module: TensorDictModuleBase, spec: AttributionSpec, probes: ProbeSpec | None
) -> tuple[Attributed, TensorDictModuleBase]:
    """``Attributed(module, ...)`` (inside ``Recorded`` with probes), as every evaluation
    calls it; a target the module cannot compute, an input it does not read or an unknown
    site fails here, with the callback named."""
    try:
        method = cast("AttributionMethod", spec.method)  # resolved by AttributionSpec
        explained = Attributed(module, method, inputs=list(spec.inputs), targets=spec.targets)
        recorded = Recorded(explained, probes.sites) if probes is not None else explained
        return explained, recorded
    except (ValueError, TypeError) as err:
        raise type(err)(f"{PREFIX}: {err}") from err


def dry_call(env: EnvBase, explained: TensorDictModuleBase, module: Any) -> TensorDictBase:
    """``explained(env.reset())`` as the evaluation will call it (deterministic actions, no
    grad); a failure is re-raised naming what the reset gives and what the module writes."""
    td = env.reset()
    gives = held_keys(td)
    writes = list(getattr(module, "out_keys", []))
    try:
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            return explained(td)
    except KeyError as err:
        message = err.args[0] if err.args else repr(err)
        raise KeyError(
            f"{PREFIX}: one call of the explained module on env.reset() failed: {message}. "
            f"The module writes {writes}; env.reset() gives {gives}. A target must be "
            "something the module computes: pass the module that computes every head (e.g. "
            "the actor-critic, TensorDictSequential(actor, critic)), or drop the head."
        ) from err
    except (ValueError, TypeError, IndexError, RuntimeError) as err:
        raise ValueError(
            f"{PREFIX}: one call of the explained module on env.reset() failed: {err}"
        ) from err


def agent_dims(td: TensorDictBase, key: NestedKey) -> int:
    """How many batch dimensions the sub-TensorDict holding ``key`` adds to ``td``'s: 1 for
    TorchRL's MARL layout (``("agents", "observation")``, agents as a batch dimension)."""
    parts = key_tuple(key)
    if len(parts) < 2:
        return 0
    parent = td.get(parts[:-1], None)
    if not isinstance(parent, TensorDictBase):
        return 0
    return parent.batch_dims - td.batch_dims


def input_groups(
    td: TensorDictBase, spec: AttributionSpec, key: NestedKey | None = None
) -> tuple[FeatureGroups, int]:
    """The rows the input ``key`` (default: the first input) is logged in, and its agent
    dimensions, checked on ``td`` (the dry call's output): ``feature_names`` must fit the
    input's features. For a hidden site, the shape is its attribution's."""
    key = spec.inputs[0] if key is None else key
    if key_tuple(key) not in [key_tuple(k) for k in td.keys(True)]:  # a hidden site
        head = next(iter(td.get("attribution").keys()))
        value = td.get(("attribution", head, *key_tuple(key)))
        if spec.feature_names is None:
            return unit_groups(tuple(value.shape[td.batch_dims :])), 0
    else:
        value = td.get(key)
    agents = agent_dims(td, key)
    if agents > 1:
        raise ValueError(
            f"{PREFIX}: input {key!r} sits under {agents} agent batch dimensions; one (TorchRL's "
            "MARL layout) is supported"
        )
    if spec.pool_agents and not agents:
        raise ValueError(
            f"{PREFIX}: AttributionSpec(pool_agents=True) needs a multi-agent input (under a "
            f"sub-TensorDict with an agent batch dimension); {key!r} has none"
        )
    shape = tuple(value.shape[td.batch_dims :])
    try:
        groups = feature_groups(
            shape, spec.feature_names, agent_dims=agents, pool_agents=spec.pool_agents
        )
    except ValueError as err:
        where = (
            f"per-agent shape {shape[1:]}, {shape[0]} agents"
            if agents
            else f"per-sample shape {shape}"
        )
        raise ValueError(
            f"{PREFIX}: AttributionSpec.feature_names do not fit input {key!r} ({where}): {err}"
        ) from err
    return groups, agents


def site_groups(td: TensorDictBase, explained: Attributed) -> dict[str, FeatureGroups]:
    """``{site name: unit groups}`` for each hidden site ``explained`` attributes to, from
    the shape of its attribution in ``td`` (the dry call's output)."""
    root = key_tuple(explained.out_key)
    head = next(iter(explained.targets))
    return {
        site.name: unit_groups(tuple(td.get((*root, head, site.name)).shape[td.batch_dims :]))
        for site in explained.hidden
    }


def check_labels(probes: ProbeSpec, td: TensorDictBase, env: EnvBase) -> None:
    """Every label but a callable is read from ``td`` (the dry call's output, with the
    env's ``"next"`` entries): a label the rollout will not hold fails now."""
    static = {
        name: spec
        for name, spec in probes.labels.items()
        if not isinstance(as_target(spec), FromCallable)
    }
    if not static:
        return
    if "next" not in td.keys():
        td = td.clone(False)
        td.set("next", env.fake_tensordict().get("next").to(td.device))
    try:
        labels_from(td, static)
    except (KeyError, ValueError, IndexError, TypeError) as err:
        raise ValueError(
            f"ProbeSpec.labels do not match the rollout: {err.args[0] if err.args else err}"
        ) from err


def check_interventions(interventions: Interventions, module: TensorDictModuleBase) -> None:
    """Every intervention's sites resolve against ``module`` (``Intervened`` raises)."""
    for name, sites in interventions.effects.items():
        try:
            Intervened(module, sites)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(
                f"Interventions: {name!r}: {err.args[0] if err.args else err}"
            ) from err


def heads_description(targets: Mapping[str, Any]) -> dict[str, str]:
    """``{head: repr(target)}``: which readout each head explains, for the logs."""
    return {head: repr(target) for head, target in targets.items()}
