"""``InterpretabilityCallback``: every N frames, evaluate the agent with attribution, probes
of hidden layers and interventions, log scalars through a TorchRL logger and save figures."""

from __future__ import annotations

import operator
import time
import warnings
from collections.abc import Mapping
from typing import Any, cast

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record.loggers import Logger

from tdhook_rl.callbacks.checkpoints import CheckpointKeeper, concepts_across
from tdhook_rl.callbacks.checks import (
    check_interventions,
    check_labels,
    dry_call,
    heads_description,
    input_groups,
    site_groups,
    wrap,
)
from tdhook_rl.callbacks.faithfulness import check_faithfulness, faithfulness_scalars
from tdhook_rl.callbacks.options import (
    EXPERIMENT,
    AttributionSpec,
    CheckpointSpec,
    Interventions,
    LogTo,
    ProbeSpec,
    Schedule,
    check_option,
)
from tdhook_rl.callbacks.scalars import (
    episode_scalars,
    head_shares,
    scalar_name,
    site_scalars,
    slug,
)
from tdhook_rl.core.loggers import LOGGER_BACKENDS
from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.latent.probes import ProbeResults, fit_probes
from tdhook_rl.targets import ActionLogProb, as_targets

__all__ = ["EXPERIMENT", "InterpretabilityCallback"]


class InterpretabilityCallback:
    """Tracks what an agent attends to and encodes while it learns, and what that costs.

    Every ``schedule.every_frames`` collected frames it runs one evaluation rollout of
    ``schedule.eval_steps`` steps (deterministic actions, like TorchRL's evaluators) with
    ``module`` wrapped in :class:`~tdhook_rl.Attributed` (and :class:`~tdhook_rl.Recorded`
    when ``probes`` is given), and logs:

    * ``eval/return``, ``eval/episode_length`` (mean over finished episodes, else the sum);
    * ``attribution/<head>/<feature>``: each input feature's share of the mean absolute
      attribution, per head (``attribution/<head>/agent<i>/<feature>`` for a multi-agent
      input, or pooled over agents with ``AttributionSpec(pool_agents=True)``; per channel,
      per block of a single-channel image or of a long vector for large inputs, see
      :func:`~tdhook_rl.attribution.features.feature_groups`);
    * ``attribution/<head>/<site>/<unit group>`` for each hidden site among the inputs
      (``AttributionSpec(inputs=["observation", "module.0.module.1"])``): each unit's share
      of the head's mean absolute attribution to that layer (per channel or block of units
      for large layers; only the largest with ``AttributionSpec(top_units=k)``);
    * ``attribution/<head>/rounding_level``: 1 when the head's attributions are at the float
      rounding level of its output (:func:`~tdhook_rl.attribution.noise.rounding_level`; e.g.
      ``ActionLogProb()`` of a deterministic continuous policy with a state-independent
      scale): that head's shares are then not logged, and a warning (once) says to explain
      ``ActionLoc()`` instead; else 0;
    * ``probe/<site>/<label>/r2``: held-out R^2 of a ridge probe from each recorded site to
      each label, on an episode-wise split of the same rollout (with ``probes``; an
      evaluation whose rollout holds fewer than two episodes, or a label constant on the
      held-out episodes, skips them with a warning);
    * ``intervention/<name>/return_change`` (and its interval) with ``interventions``;
    * ``tdhook/eval_seconds``: the evaluation's own wall time, and
      ``tdhook/overhead_fraction``: the seconds spent in all evaluations so far (logging
      included) over the wall time since :meth:`start` (or the first call, or
      :meth:`register`).

    Which readout each head explains is logged once as the logger's hyper-parameters
    (``attribution/<head>/target``; with the CSV logger, ``texts/hparams0.txt``) and kept in
    :attr:`heads`. Every ``log.figures_every`` evaluations it also saves PNGs (attribution
    over time of the first trajectory, feature shares by head, probe R^2 by layer, spatial
    maps of image-like inputs) under ``log.log_dir/figures``.

    When it is built, it checks its options against the module and the environment with one
    dry call of the wrapped module on ``env.reset()``: inputs the env does not give, targets
    the module cannot compute (``ActionLogProb()`` on a deterministic actor, a ``"value"``
    head ``"state_value"`` on an actor without a critic), ``feature_names`` that do not fit
    the input, probe labels the rollout will not hold, unknown sites: each a ``ValueError``
    (``KeyError`` for a missing key) naming what is wrong and what exists.

    Cost, measured: with the defaults (``every_frames=50_000``, ``eval_steps=500``,
    integrated gradients with 16 steps, figures every 5 evaluations) on the double pendulum
    trained with the PPO recipe of ``agents/double_pendulum/train.py`` for 100k frames, two
    heads attributed, both actor hidden layers probed for 6 labels, one ablation of 4 paired
    episodes and a 4-copy evaluation env, ``tdhook/overhead_fraction`` ended at 11-16%
    (3 runs; 2 evaluations of 4.4-10.7 s each, the first one paying for imports, in 93-112 s
    of wall time; one torch thread on 2 CPU cores shared with other jobs); at
    ``--every-frames 25000 --figures-every 1`` (4 evaluations) at 20-21% (see
    ``examples/train_with_callback.py``). Fewer steps or a longer period cost less.

    Use it from a plain loop as ``callback(frames)`` (``frames`` = frames collected so far;
    the module shares the trained parameters, so it explains the current agent), or on a
    TorchRL ``Trainer`` with ``callback.register(trainer)`` (a ``"post_steps_log"`` op;
    scalars go through the trainer's logger).

    Args:
        env: the evaluation environment (for probes, a batched env, e.g. 4 copies, gives
            several episodes per rollout even when the agent never falls).
        module: the module that computes every head (e.g. the actor-critic); it also acts.
        attribution: what to explain: :class:`AttributionSpec` (targets, inputs, method,
            feature names, agent pooling).
        schedule: when, how long, at what cost at most: :class:`Schedule` (default
            ``Schedule()``: every 50,000 frames, 500 steps, at most 25% of the wall time).
        probes: a :class:`ProbeSpec`: the hidden layers to record and the labels to probe.
        interventions: :class:`Interventions` whose return effect is logged.
        log: where results go: :class:`LogTo` (default ``LogTo()``: CSV under
            ``tdhook_rl_logs``, figures every 5 evaluations).
        checkpoints: a :class:`CheckpointSpec`: keep the module's state dict every N frames
            (at every call that is due, evaluated or not), for :meth:`concepts_across`.

    Attributes:
        history: one dict of scalars per evaluation, with ``"frames"``.
        heads: ``{head: the readout it explains}``, e.g. ``{"force": "Index('action', 0)"}``.
        groups: the rows the first input is logged in
            (:class:`~tdhook_rl.attribution.features.FeatureGroups`).
        rounding: the heads found at rounding level at the last evaluation (not ranked).
        last_rollout: the last evaluation rollout, with its attributions and activations.
        last_probes: the last :class:`~tdhook_rl.latent.probes.ProbeResults` (or ``None``).
        checkpoints: the :class:`~tdhook_rl.callbacks.checkpoints.CheckpointKeeper` (or
            ``None``); ``last_concepts``: the last :meth:`concepts_across` table.

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.envs import GymEnv
        >>> env = GymEnv("Pendulum-v1")
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> actor = TensorDictModule(net, ["observation"], ["action"])
        >>> callback = InterpretabilityCallback(
        ...     env, actor, AttributionSpec({"force": ("action", 0)}),
        ...     schedule=Schedule(every_frames=1000, eval_steps=250),
        ...     probes=ProbeSpec({"h": "module.1"}, {"cos": ("observation", 0)}, held_out=0.5),
        ...     log=LogTo(None, figures_every=0),  # 250 steps: two episodes (200 + 50 steps)
        ... )
        >>> callback(500) is None  # not due yet
        True
        >>> scalars = callback(1000)
        >>> sorted(k for k in scalars if k.startswith(("eval/", "probe/")))
        ['eval/episode_length', 'eval/return', 'probe/h/cos/r2']
        >>> callback.heads
        {'force': "Index('action', 0)"}
    """

    def __init__(
        self,
        env: EnvBase,
        module: TensorDictModuleBase,
        attribution: AttributionSpec,
        *,
        schedule: Schedule | None = None,
        probes: ProbeSpec | None = None,
        interventions: Interventions | None = None,
        log: LogTo | None = None,
        checkpoints: CheckpointSpec | None = None,
    ) -> None:
        check_option("attribution", attribution, AttributionSpec, required=True)
        check_option("schedule", schedule, Schedule)
        check_option("probes", probes, ProbeSpec)
        check_option("interventions", interventions, Interventions)
        check_option("log", log, LogTo)
        check_option("checkpoints", checkpoints, CheckpointSpec)
        self.env = env
        self.module = module
        self.attribution = attribution
        self.schedule = schedule if schedule is not None else Schedule()
        self.probes = probes
        self.interventions = interventions
        self.log = log if log is not None else LogTo()
        self.deferred = 0  # calls at which a due evaluation was put off by max_overhead
        self._specs = as_targets(attribution.targets)  # as given, unbound
        # the one wrapper every evaluation calls: Attributed, in Recorded with probes
        attributed, self.explained = wrap(module, attribution, probes)
        self.targets = attributed.targets  # bound to the module
        self._attributed = attributed  # re-evaluated by the faithfulness scalars
        check_faithfulness(attribution.faithfulness, attributed)
        if interventions is not None:
            check_interventions(interventions, module)
        checked = dry_call(env, self.explained, module)
        # the first entry the module reads is logged per feature and drawn (else the first
        # hidden site); every hidden site is logged per unit group
        keys = attributed.inputs
        self.drawn_key = keys[0] if keys else attributed.hidden[0].name
        self.groups, _ = input_groups(checked, attribution, self.drawn_key)
        self.sites = site_groups(checked, attributed)
        self.rounding: set[str] = set()  # heads at rounding level at the last evaluation
        if probes is not None:
            check_labels(probes, checked, env)
        self.heads = heads_description(self.targets)
        self._logger: Logger | str | None = self.log.logger
        self._hparams_logged = False
        self._warned: set[str] = set()  # heads already warned about as rounding level
        self.next_frames = self.schedule.every_frames
        self.evaluations = 0
        self.history: list[dict[str, float]] = []
        self.last_rollout: TensorDictBase | None = None
        self.last_probes: ProbeResults | None = None
        self._frames = 0
        self._clock: float | None = None  # perf_counter() at start() or the first call
        self._cost = 0.0  # seconds spent evaluating and logging, all evaluations together
        self.checkpoints = (
            None
            if checkpoints is None
            else CheckpointKeeper(module, checkpoints, self.schedule.every_frames)
        )
        self.last_concepts: Any = None

    @property
    def logger(self) -> Logger | None:
        """The logger (built on first use when given by name), or ``None``."""
        if isinstance(self._logger, str):
            from torchrl.record import loggers

            cls = getattr(loggers, LOGGER_BACKENDS[self._logger].cls)
            self._logger = cls(exp_name=EXPERIMENT, log_dir=str(self.log.log_dir))
        return self._logger

    def due(self, frames: int) -> bool:
        """Whether an evaluation is due at ``frames`` collected frames."""
        return frames >= self.next_frames

    def __call__(self, frames: int, *, force: bool = False) -> dict[str, float] | None:
        """Evaluates if due (or ``force``); logs and returns the scalars, else ``None``."""
        frames = _as_frames(frames)
        self.start()
        self._checkpoint(frames)
        if not (force or self.due(frames)):
            return None
        if not force and self.over_budget():
            self.deferred += 1
            return None
        scalars = self.evaluate(frames)
        start = time.perf_counter()
        logger = self.logger
        if logger is not None:
            self._log_heads(logger)
            for name, value in scalars.items():
                logger.log_scalar(name, value, step=frames)
        self._cost += time.perf_counter() - start
        return scalars

    def over_budget(self) -> bool:
        """Whether evaluating now would start while the evaluations so far have taken more
        than ``schedule.max_overhead`` of the wall time since the clock started."""
        bound = self.schedule.max_overhead
        return bound is not None and self.overhead_fraction > bound

    @property
    def overhead_fraction(self) -> float:
        """Seconds spent in evaluations (and their logging) over the wall time since
        :meth:`start` or the first call; 0 before."""
        if self._clock is None:
            return 0.0
        return self._cost / max(time.perf_counter() - self._clock, 1e-9)

    def evaluate(self, frames: int) -> dict[str, float]:
        """Runs one evaluation now and returns its scalars (not logged)."""
        self.start()
        start = time.perf_counter()
        while self.next_frames <= frames:
            self.next_frames += self.schedule.every_frames
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = self.env.rollout(
                self.schedule.eval_steps, self.explained, break_when_any_done=False
            )
        self.last_rollout = rollout
        scalars = episode_scalars(self.env, rollout)
        scalars |= self._attribution_scalars(rollout)
        if self.attribution.faithfulness is not None:
            scalars |= faithfulness_scalars(self._attributed, rollout, self.rounding)
        if self.probes is not None:
            scalars |= self._probe_scalars(rollout, self.probes)
        if self.interventions is not None:
            scalars |= self._intervention_scalars(self.interventions)
        self.evaluations += 1
        every = self.log.figures_every
        if every and self.evaluations % every == 1 % every:
            self._figures(rollout, frames)
        elapsed = time.perf_counter() - start
        self._cost += elapsed
        scalars["tdhook/eval_seconds"] = elapsed
        scalars["tdhook/overhead_fraction"] = self.overhead_fraction
        self.history.append({"frames": float(frames), **scalars})
        return scalars

    def start(self) -> None:
        """Starts the clock of ``tdhook/overhead_fraction`` now, if it is not running.

        The first call (or :meth:`register`) starts it otherwise; call this just before the
        training loop so that the first iteration counts too.
        """
        if self._clock is None:
            self._clock = time.perf_counter()

    def _attribution_scalars(self, rollout: TensorDictBase) -> dict[str, float]:
        heads = head_shares(rollout, self.targets, self.drawn_key, self.groups)
        self.rounding = {h for h, s in heads.items() if s.rounding}
        scalars: dict[str, float] = {}
        features = self.drawn_key not in self.sites  # a site's rows are logged below
        for head, summary in heads.items():
            if summary.rounding is not None:
                scalars[scalar_name("attribution", head, "rounding_level")] = float(
                    summary.rounding
                )
            for name, value in summary.shares.items() if features else ():
                scalars[scalar_name("attribution", head, name)] = value
            if summary.rounding and head not in self._warned:
                self._warned.add(head)
                warnings.warn(self._rounding_message(head, summary), RuntimeWarning, stacklevel=4)
        if self.sites:
            targets = {h: t for h, t in self.targets.items() if h not in self.rounding}
            scalars |= site_scalars(rollout, targets, self.sites, self.attribution.top_units)
        return scalars

    def _rounding_message(self, head: str, summary: Any) -> str:
        message = (
            f"InterpretabilityCallback: head {head!r} ({self.heads[head]}) has attributions at "
            f"the float rounding level of its output (|attribution| summed over features "
            f"{summary.mean_abs:.2g} per step against |output| {summary.output_scale:.2g}) on "
            f"the deterministic evaluation rollout: they are noise, not a dependence on the "
            f"input, so its feature shares are not logged (attribution/{slug(head)}/"
            "rounding_level = 1)."
        )
        if isinstance(self._specs[head], ActionLogProb):
            message += (
                " With deterministic actions (the mode) and a state-independent scale, the "
                "gradient of the action's log-probability is zero: explain the distribution's "
                "location instead, targets={..., " + repr(head) + ": ActionLoc()} "
                "(from tdhook_rl.targets import ActionLoc)."
            )
        return message

    def _log_heads(self, logger: Any) -> None:
        """Once: which readout each head explains, as the logger's hyper-parameters."""
        if self._hparams_logged or not callable(getattr(logger, "log_hparams", None)):
            return
        self._hparams_logged = True
        config = {f"attribution/{slug(h)}/target": t for h, t in self.heads.items()}
        config["attribution/method"] = repr(self.attribution.method)
        config["attribution/input"] = repr(self.drawn_key)
        if self.sites:
            config["attribution/sites"] = ", ".join(self.sites)
        logger.log_hparams(config)

    def _probe_scalars(self, rollout: TensorDictBase, spec: ProbeSpec) -> dict[str, float]:
        try:
            results = fit_probes(
                rollout,
                list(cast("Mapping[str, Any]", spec.sites)),  # a dict after __post_init__
                spec.labels,
                held_out=spec.held_out,
                seed=spec.seed,
                probe_options={"alpha": spec.alpha},
            )
        except ValueError as err:  # too few episodes, a constant label: skip, keep training
            warnings.warn(
                f"InterpretabilityCallback: no probe scores at this evaluation: {err}",
                RuntimeWarning,
                stacklevel=4,
            )
            self.last_probes = None
            return {}
        self.last_probes = results
        return {
            scalar_name("probe", row["site"], row["label"], "r2"): row["r2"] for row in results.rows
        }

    def _intervention_scalars(self, spec: Interventions) -> dict[str, float]:
        scalars: dict[str, float] = {}
        for name, sites in spec.effects.items():
            effect = intervention_effect(
                self.env,
                self.module,
                sites,
                episodes=spec.episodes,
                max_steps=self.schedule.eval_steps,
            )
            s = effect.summary["returns"]
            for suffix, field in (("", "change"), ("_low", "low"), ("_high", "high")):
                scalars[f"intervention/{slug(name)}/return_change{suffix}"] = s[field]
        return scalars

    def _figures(self, rollout: TensorDictBase, frames: int) -> None:
        from tdhook_rl.callbacks.figures import save_figures

        save_figures(self, rollout, frames)

    def _checkpoint(self, frames: int) -> None:
        if self.checkpoints is not None and self.checkpoints.due(frames):
            start = time.perf_counter()
            self.checkpoints(frames)
            self._cost += time.perf_counter() - start

    def concepts_across(self, concepts: Any = None, sites: Any = None, **options: Any) -> Any:
        """Concepts across the kept checkpoints on the last evaluation rollout: the
        :class:`~tdhook_rl.concepts.across.ConceptTable`, its map PNG and logged
        selectivities (see :func:`~tdhook_rl.callbacks.checkpoints.concepts_across`)."""
        return concepts_across(self, concepts, sites, **options)

    def register(self, trainer: Any, name: str = "interpretability") -> None:
        """Registers the callback on a TorchRL ``Trainer`` as a ``"post_steps_log"`` op and
        starts the overhead clock (register just before ``trainer.train()``)."""
        self._trainer = trainer
        self.start()
        trainer.register_op("post_steps_log", self._trainer_op)

    def _trainer_op(self, batch: TensorDictBase) -> dict[str, float] | None:
        self.start()
        trainer = getattr(self, "_trainer", None)
        frames = getattr(trainer, "collected_frames", None)
        if frames is None:
            self._frames += batch.numel()
            frames = self._frames
        self._checkpoint(frames)
        if not self.due(frames):
            return None
        if self.over_budget():
            self.deferred += 1
            return None
        return self.evaluate(frames)


def _as_frames(frames: Any) -> int:
    """``frames`` as an int (a numpy or 0-d torch integer is fine), else a ``TypeError``."""
    if not isinstance(frames, bool):
        try:
            return operator.index(frames)
        except TypeError:
            pass
    hint = " (pass that module at construction)" if isinstance(frames, nn.Module) else ""
    raise TypeError(
        "call the callback with the frames collected so far, callback(frames), got "
        f"{type(frames).__name__}; it explains the module it was built with{hint}"
    )
