"""The options of :class:`~tdhook_rl.callbacks.InterpretabilityCallback` and their checks:
what to probe (:class:`ProbeSpec`), and which logger (by name or instance)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.record.loggers import Logger

from tdhook_rl.core.sites import SiteSpec
from tdhook_rl.core.sites import site_name as _site_name
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.latent.splits import LabelSpec, check_held_out, labels_from
from tdhook_rl.targets import Index

__all__ = ["EXPERIMENT", "LOGGER_BACKENDS", "ProbeSpec", "check_logger", "check_probes"]

#: ``logger=`` names -> (TorchRL logger class name, the package it needs or ``None``)
LOGGER_BACKENDS: dict[str, tuple[str, str | None]] = {
    "csv": ("CSVLogger", None),
    "tensorboard": ("TensorboardLogger", "tensorboard"),
    "wandb": ("WandbLogger", "wandb"),
}
EXPERIMENT = "tdhook_rl"
"""The experiment name of the loggers the callback builds: CSV files go under
``log_dir / EXPERIMENT / "scalars"``."""


@dataclass
class ProbeSpec:
    """What :class:`InterpretabilityCallback` probes: hidden layers, labels, and the split.

    At each evaluation the ``sites`` are recorded during the evaluation rollout itself (with
    :class:`~tdhook_rl.Recorded`, from the real forward pass), one ridge probe per
    ``(site, label)`` is fitted on part of the rollout's episodes and scored by R^2 on the
    others (:func:`~tdhook_rl.latent.probes.fit_probes`).

    Args:
        sites: ``{name: site}`` or a list of sites (each named by its spelling), as in
            :class:`~tdhook_rl.Recorded`: submodule paths of the explained module as its
            ``named_modules()`` spells them (e.g. ``"module.0.module.0.module.0.1"``).
        labels: ``{name: column}`` read from the rollout, as in
            :func:`~tdhook_rl.latent.probes.labels_from`: a key (``"tip_height"``), a
            ``(key, index)`` pair (``("qpos", 0)``) or a callable ``td -> Tensor``. Root keys
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
        check_held_out(self.held_out)
        if not isinstance(self.alpha, int | float) or not self.alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")


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
        package = LOGGER_BACKENDS[logger][1]
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


def check_probes(probes: ProbeSpec, env: EnvBase, module: TensorDictModuleBase) -> None:
    """Fails now, not at the first evaluation: unknown sites, labels the env does not give."""
    if not isinstance(probes, ProbeSpec):
        raise TypeError(
            f"probes must be a ProbeSpec(sites, labels), got {type(probes).__name__}: e.g. "
            "ProbeSpec({'h1': 'module.1'}, {'x': ('observation', 0)})"
        )
    Recorded(module, probes.sites)  # resolves every site against the module
    static = {k: v for k, v in probes.labels.items() if isinstance(v, Index) or not callable(v)}
    if static:
        try:
            labels_from(env.fake_tensordict(), static)
        except (KeyError, ValueError, IndexError, TypeError) as err:
            raise ValueError(
                f"ProbeSpec.labels do not match the env's specs: {err.args[0]}"
            ) from err
