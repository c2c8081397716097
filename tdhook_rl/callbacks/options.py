"""The grouped options of :class:`~tdhook_rl.callbacks.InterpretabilityCallback`: what to
explain (:class:`AttributionSpec`), when (:class:`Schedule`), what to probe
(:class:`ProbeSpec`), which interventions to measure (:class:`Interventions`) and where the
results go (:class:`LogTo`). Each checks its own values when it is built; what needs the
policy and the environment is checked by the callback (:mod:`.checks`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import NestedKey
from torchrl.record.loggers import Logger

from tdhook_rl.attribution import AttributionMethod, IntegratedGradients, resolve_method
from tdhook_rl.core.loggers import LOGGER_BACKENDS
from tdhook_rl.core.sites import SiteSpec
from tdhook_rl.core.sites import site_name as _site_name
from tdhook_rl.latent.splits import LabelSpec, check_held_out
from tdhook_rl.targets import as_target

__all__ = [
    "EXPERIMENT",
    "AttributionSpec",
    "CheckpointSpec",
    "Interventions",
    "LogTo",
    "ProbeSpec",
    "Schedule",
    "check_logger",
    "check_option",
]

EXPERIMENT = "tdhook_rl"
"""The experiment name of the loggers the callback builds: CSV files go under
``log_dir / EXPERIMENT / "scalars"``."""


@dataclass(frozen=True)
class AttributionSpec:
    """What the callback explains: the heads (targets), the inputs, the method, the names.

    Args:
        targets: ``{head: target}`` as in :class:`~tdhook_rl.Attributed` (a key, ``(key,
            i)``, :class:`~tdhook_rl.targets.ActionLoc`,
            :class:`~tdhook_rl.targets.ActionLogProb`, ...). The callback evaluates with
            deterministic actions: for a continuous policy explain ``ActionLoc()``, the
            distribution's location (the mode's log-probability has a zero gradient for a
            state-independent scale; such a head is flagged and not ranked).
        inputs: the attributed inputs: entries the module reads and hidden sites (as in
            :class:`~tdhook_rl.Attributed`: a submodule path such as
            ``"module.0.module.1"``, a key a sub-module writes, ``thr.of_type(...)``). The
            first entry read (else the first site) is logged per feature and drawn; each
            hidden site is logged per unit group, ``attribution/<head>/<site>/<group>``
            (one group per unit up to 64 units, else per channel or block of units, see
            :func:`~tdhook_rl.callbacks.scalars.unit_groups`).
        method: the attribution method or its name (default
            ``IntegratedGradients(n_steps=16)``).
        feature_names: one name per feature of the first input (for scalar names and
            plots), or one per index of its first dimension (channels, planes); for a
            multi-agent input (``("agents", "observation")``), the names of one agent's
            features (scalars are named ``agent{i}/{name}``).
        pool_agents: for a multi-agent input, log each feature's share summed over the
            agents (``attribution/<head>/<feature>``) instead of one per agent and feature.
        faithfulness: ``"deletion"``: also log, per head, the normalized deletion area of
            its attributions on the evaluation rollout and its chance level
            (``faithfulness/<head>/deletion_auc`` and ``.../deletion_auc_random``; see
            :mod:`tdhook_rl.callbacks.faithfulness`); ``None``: not.
        top_units: log only this many unit groups per hidden site and head (the largest
            shares at each evaluation, named by their unit) and the rest's share as
            ``attribution/<head>/<site>/other``; ``None`` logs every group.

    Examples:
        >>> from tdhook_rl.targets import ActionLoc
        >>> spec = AttributionSpec({"policy": ActionLoc(), "value": "state_value"})
        >>> spec.inputs, spec.method
        (('observation',), IntegratedGradients(n_steps=16, rule='gausslegendre', baseline=0.0, chunk_size=None))
    """  # noqa: E501

    targets: Mapping[str, Any] | Any
    inputs: Sequence[NestedKey] = ("observation",)
    method: AttributionMethod | str | None = None
    feature_names: Sequence[str] | None = None
    pool_agents: bool = False
    faithfulness: str | None = None
    top_units: int | None = None

    def __post_init__(self) -> None:
        from tdhook_rl.callbacks.faithfulness import check_faithfulness

        check_faithfulness(self.faithfulness)
        if self.top_units is not None and (
            isinstance(self.top_units, bool)
            or not isinstance(self.top_units, int)
            or self.top_units < 1
        ):
            raise ValueError(
                f"AttributionSpec.top_units must be None or an int >= 1, got {self.top_units!r}"
            )
        inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        if not inputs:
            raise ValueError("AttributionSpec.inputs is empty: name e.g. ('observation',)")
        object.__setattr__(self, "inputs", inputs)
        method = IntegratedGradients(n_steps=16) if self.method is None else self.method
        object.__setattr__(self, "method", resolve_method(method))
        if self.feature_names is not None:
            if isinstance(self.feature_names, str):
                raise TypeError("feature_names must be a sequence of names, not one string")
            object.__setattr__(self, "feature_names", tuple(self.feature_names))


@dataclass(frozen=True)
class Schedule:
    """When the callback evaluates, for how long, and at what cost at most.

    Args:
        every_frames: evaluation period in collected frames.
        eval_steps: steps of the evaluation rollout.
        max_overhead: the bound on the callback's cost: an evaluation that falls due while
            the evaluations so far have taken more than this fraction of the wall time
            since the clock started is put off to a later call (counted in
            ``callback.deferred``), so over a run the fraction stays near the bound (it can
            exceed it by at most one evaluation's time); ``None``: evaluate whenever due.
    """

    every_frames: int = 50_000
    eval_steps: int = 500
    max_overhead: float | None = 0.25

    def __post_init__(self) -> None:
        if self.every_frames < 1 or self.eval_steps < 1:
            raise ValueError(
                f"every_frames and eval_steps must be positive, got every_frames="
                f"{self.every_frames!r}, eval_steps={self.eval_steps!r}"
            )
        if self.max_overhead is not None and not 0.0 < self.max_overhead < 1.0:
            raise ValueError(f"max_overhead must be in (0, 1) or None, got {self.max_overhead!r}")


@dataclass
class ProbeSpec:
    """What the callback probes: hidden layers, labels, and the split.

    At each evaluation the ``sites`` are recorded during the evaluation rollout itself (with
    :class:`~tdhook_rl.Recorded`, from the real forward pass), one ridge probe per
    ``(site, label)`` is fitted on part of the rollout's episodes and scored by R^2 on the
    others (:func:`~tdhook_rl.latent.probes.fit_probes`).

    Args:
        sites: ``{name: site}`` or a list of sites (each named by its spelling), as in
            :class:`~tdhook_rl.Recorded`: submodule paths of the explained module as its
            ``named_modules()`` spells them (e.g. ``"module.0.module.0.module.0.1"``).
        labels: ``{name: readout}`` read from the rollout, spelled as targets are
            (:func:`~tdhook_rl.targets.as_target`): a key (``"tip_height"``), a key and
            indices (``("qpos", 0)``, the same as ``Index("qpos", 0)``) or a callable
            ``td -> Tensor``; not a readout of the module (``ActionLogProb()``). Root keys
            hold the state the step's activations were computed from.
        held_out: the fraction of the rollout's episodes held out for scoring, in ``(0, 1)``.
        alpha: the ridge penalty on standardized features
            (:class:`~tdhook_rl.latent.probes.RidgeProbe`).
        seed: seeds the episode split.

    Examples:
        >>> spec = ProbeSpec(["module.0.module.0.1"], {"x": ("observation", 0)})
        >>> spec.sites
        {'module.0.module.0.1': 'module.0.module.0.1'}
    """

    sites: Mapping[str, SiteSpec] | Sequence[SiteSpec]
    labels: Mapping[str, LabelSpec]
    held_out: float = 0.25
    alpha: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.sites, str) or not isinstance(self.sites, Mapping | Sequence):
            raise TypeError(
                f"sites must be a list of sites or a {{name: site}} mapping, got {self.sites!r}"
            )
        if not isinstance(self.sites, Mapping):
            self.sites = {_site_name(s): s for s in self.sites}
        else:
            self.sites = dict(self.sites)
        if not self.sites:
            raise ValueError("ProbeSpec.sites is empty: name at least one hidden layer")
        if not isinstance(self.labels, Mapping) or not self.labels:
            raise TypeError(
                "ProbeSpec.labels must be a non-empty {name: key | (key, index) | callable} "
                f"mapping, got {self.labels!r}"
            )
        self.labels = dict(self.labels)
        for name, column in self.labels.items():
            if isinstance(column, torch.Tensor):
                raise TypeError(
                    f"label {name!r} is a tensor, which cannot follow a new rollout at every "
                    "evaluation; name the key that holds it, or give a callable td -> Tensor"
                )
            if as_target(column).needs_module:
                raise TypeError(
                    f"label {name!r} is {column!r}, which reads the module; a label is read "
                    "from the rollout: a key, (key, index), Index(key, i) or a callable "
                    "td -> Tensor"
                )
        check_held_out(self.held_out)
        if not isinstance(self.alpha, int | float) or not self.alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")


@dataclass(frozen=True)
class Interventions:
    """Interventions whose effect on the return the callback measures at each evaluation
    (paired episodes, see :func:`tdhook_rl.evaluate.intervention_effect`).

    Args:
        effects: ``{name: {site: intervention}}`` as in :class:`~tdhook_rl.Intervened`;
            logged as ``intervention/<name>/return_change`` (and its interval).
        episodes: paired episodes per intervention.

    Examples:
        >>> from tdhook_rl.interventions import Ablate
        >>> Interventions({"h1 off": {"module.0.module.0.1": Ablate()}}, episodes=2).episodes
        2
    """

    effects: Mapping[str, Mapping[Any, Any]]
    episodes: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.effects, Mapping) or not all(
            isinstance(v, Mapping) for v in self.effects.values()
        ):
            raise TypeError(
                "Interventions.effects must be {name: {site: intervention}}, got "
                f"{self.effects!r}"
            )
        if self.episodes < 1:
            raise ValueError(f"Interventions.episodes must be positive, got {self.episodes!r}")
        object.__setattr__(self, "effects", dict(self.effects))


@dataclass(frozen=True)
class LogTo:
    """Where the callback's results go.

    Args:
        logger: a TorchRL :class:`~torchrl.record.loggers.Logger`, or the name of one built
            under ``log_dir`` on first use (the names of
            :data:`tdhook_rl.core.loggers.LOGGER_BACKENDS`: ``"csv"``, ``"tensorboard"``,
            ``"wandb"``); ``None`` logs nothing (scalars are still returned and kept in
            ``callback.history``). A name whose package is missing raises ``ImportError``
            here.
        log_dir: where a logger built from a name and the figures go.
        figures_every: save figures every this many evaluations (0: never).

    Examples:
        >>> LogTo("csv", log_dir="runs").log_dir
        PosixPath('runs')
    """

    logger: Logger | str | None = "csv"
    log_dir: str | Path = "tdhook_rl_logs"
    figures_every: int = 5

    def __post_init__(self) -> None:
        check_logger(self.logger)
        object.__setattr__(self, "log_dir", Path(self.log_dir))
        if self.figures_every < 0:
            raise ValueError(f"figures_every must be >= 0, got {self.figures_every!r}")


@dataclass(frozen=True)
class CheckpointSpec:
    """Checkpoints the callback keeps during training, and concepts across them at the end
    (:mod:`tdhook_rl.callbacks.checkpoints`).

    Args:
        folder: where ``frames_<12 digits>.pt`` files go (``{"state_dict", "frames"}``);
            created if missing. A folder already holding such files is refused (they are not
            the callback's to overwrite); other files in it are left alone.
        every_frames: the period in collected frames; ``None``: the schedule's. The first
            call saves too (call ``callback(0)`` before training to keep the initial net).
        keep: keep only the newest this many (older ones the callback wrote are deleted);
            ``None`` keeps all.
        concepts: a labeller ``td -> {name: [*batch] tensor}`` for
            ``callback.concepts_across()``, applied to the last evaluation rollout.
        sites: ``{name: site}`` probed by ``concepts_across()``; ``None``: the probes' sites.

    Examples:
        >>> CheckpointSpec("runs/ckpt", every_frames=10_000, keep=5).folder
        PosixPath('runs/ckpt')
    """

    folder: str | Path
    every_frames: int | None = None
    keep: int | None = None
    concepts: Any = None
    sites: Mapping[str, SiteSpec] | Sequence[SiteSpec] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        for name in ("every_frames", "keep"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"CheckpointSpec.{name} must be None or an int >= 1, got {value!r}"
                )
        if self.concepts is not None and not callable(self.concepts):
            raise TypeError(
                "CheckpointSpec.concepts must be a labeller td -> {name: tensor}, got "
                f"{type(self.concepts).__name__}"
            )
        if self.sites is not None:
            if isinstance(self.sites, str) or not isinstance(self.sites, Mapping | Sequence):
                raise TypeError(
                    f"CheckpointSpec.sites must be a list or a mapping, got {self.sites!r}"
                )
            sites = (
                self.sites
                if isinstance(self.sites, Mapping)
                else {_site_name(s): s for s in self.sites}
            )
            if not sites:
                raise ValueError("CheckpointSpec.sites is empty: name a hidden layer, or None")
            object.__setattr__(self, "sites", dict(sites))


def check_logger(logger: Any) -> Logger | str | None:
    """Validates ``logger=`` now, so a missing package fails at construction."""
    if logger is None or isinstance(logger, Logger):
        return logger
    if isinstance(logger, str):
        if logger not in LOGGER_BACKENDS:
            raise ValueError(
                f"logger must be a torchrl Logger, None or one of {sorted(LOGGER_BACKENDS)}, "
                f"got {logger!r}"
            )
        package = LOGGER_BACKENDS[logger].package
        if package is not None and importlib.util.find_spec(package) is None:
            raise ImportError(
                f"InterpretabilityCallback(logger={logger!r}) needs the `{package}` package: "
                f"pip install {package}",
                name=package,
            )
        return logger
    if callable(getattr(logger, "log_scalar", None)):  # duck-typed loggers are fine too
        return logger
    raise TypeError(
        f"logger must be a torchrl Logger (anything with log_scalar(name, value, step)), "
        f"None or one of {sorted(LOGGER_BACKENDS)}, got {type(logger).__name__}"
    )


_EXAMPLES = {
    "attribution": "AttributionSpec({'policy': ActionLoc(), 'value': 'state_value'})",
    "schedule": "Schedule(every_frames=50_000, eval_steps=500)",
    "probes": "ProbeSpec({'h1': 'module.0.1'}, {'x': ('observation', 0)})",
    "interventions": "Interventions({'h1 off': {'module.0.1': Ablate()}}, episodes=4)",
    "log": "LogTo('csv', log_dir='runs')",
    "checkpoints": "CheckpointSpec('runs/checkpoints', every_frames=10_000, keep=5)",
}


def check_option(name: str, value: Any, cls: type, *, required: bool = False) -> None:
    """``value`` is a ``cls`` (or ``None`` for an optional group), else a ``TypeError``
    with an example of the group."""
    if (value is None and not required) or isinstance(value, cls):
        return
    raise TypeError(
        f"{name} must be a {cls.__name__}, got {type(value).__name__}: e.g. {_EXAMPLES[name]}"
    )
