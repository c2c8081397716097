"""``InterpretabilityCallback``: every N frames, evaluate the agent with attribution, probes
of hidden layers and interventions, log scalars through a TorchRL logger and save figures."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record.loggers import Logger

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import AttributionMethod, IntegratedGradients
from tdhook_rl.callbacks.options import (
    EXPERIMENT,
    LOGGER_BACKENDS,
    ProbeSpec,
    check_logger,
    check_probes,
)
from tdhook_rl.core.keys import key_tuple
from tdhook_rl.evaluate import intervention_effect, reward_and_done
from tdhook_rl.latent.probes import ProbeResults, fit_probes
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.viz.features import feature_groups


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


class InterpretabilityCallback:
    """Tracks what an agent attends to and encodes while it learns, and what that costs.

    Every ``every_frames`` collected frames it runs one evaluation rollout of ``eval_steps``
    steps (deterministic actions, like TorchRL's evaluators) with the module wrapped in
    :class:`~tdhook_rl.Attributed` (and :class:`~tdhook_rl.Recorded` when ``probes`` is
    given), and logs:

    * ``eval/return``, ``eval/episode_length`` (mean over finished episodes, else the sum);
    * ``attribution/<head>/<feature>``: each input feature's share of the mean absolute
      attribution, per head;
    * ``probe/<site>/<label>/r2``: held-out R^2 of a ridge probe from each recorded site to
      each label, on an episode-wise split of the same rollout (with ``probes``; an
      evaluation whose rollout holds fewer than two episodes, or a label constant on the
      held-out episodes, skips them with a warning);
    * ``intervention/<name>/return_change`` (and its interval) when ``interventions`` is
      given (paired episodes, see :func:`tdhook_rl.evaluate.intervention_effect`);
    * ``tdhook/eval_seconds``: the evaluation's own wall time, and
      ``tdhook/overhead_fraction``: the seconds spent in all evaluations so far (logging
      included) over the wall time since :meth:`start` (or the first call, or
      :meth:`register`). Call :meth:`start` just before the training loop, and the callback
      at every iteration (it returns at once when no evaluation is due).

    Every ``figures_every`` evaluations it also saves PNGs (attribution over time of the
    first trajectory, feature shares by head, probe R^2 by layer) under ``log_dir/figures``.

    Cost, measured: with the defaults (``every_frames=50_000``, ``eval_steps=500``,
    integrated gradients with 16 steps, figures every 5 evaluations) on the double pendulum
    trained with the PPO recipe of ``agents/double_pendulum/train.py`` for 100k frames, two
    heads attributed, both actor hidden layers probed for 6 labels, one ablation of 4 paired
    episodes and a 4-copy evaluation env, ``tdhook/overhead_fraction`` ended at 11-16%
    (3 runs; 2 evaluations of 4.4-10.7 s each, the first one paying for imports, in 93-112 s
    of wall time; one torch thread on 2 CPU cores shared with other jobs)::

        python examples/train_with_callback.py --every-frames 50000 --figures-every 5

    At ``--every-frames 25000 --figures-every 1`` (the example's defaults, 4 evaluations) it
    ended at 20-21%. Most of an evaluation is the attributed rollout (~2.5 s for 500 steps)
    and the ablation's paired episodes (~2 s); fewer ``eval_steps``, fewer integrated-
    gradients steps or a longer period cost proportionally less.

    Use it from a plain loop as ``callback(policy, frames)`` (``frames`` = frames collected
    so far), or on a TorchRL ``Trainer`` with ``callback.register(trainer)`` (a
    ``"post_steps_log"`` op; scalars go through the trainer's logger).

    Args:
        env: the evaluation environment (for probes, a batched env, e.g. 4 copies, gives
            several episodes per rollout even when the agent never falls).
        module: the module to explain (e.g. the actor-critic); ``callback(policy, ...)`` can
            pass another one. Actions come from ``policy`` if given, else from ``module``.
        targets: ``{head: target}`` as in :class:`~tdhook_rl.Attributed`.
        inputs: attributed inputs.
        method: the attribution method (default ``IntegratedGradients(n_steps=16)``).
        every_frames: evaluation period in collected frames.
        eval_steps: steps of the evaluation rollout.
        feature_names: names of the input features (for scalar names and plots), one per
            feature or one per index of the input's first dimension (channels, planes).
            Inputs of more than 64 features are logged and drawn per group (an image per
            channel, see :func:`~tdhook_rl.viz.features.feature_groups`), and image-like
            inputs also get a figure of spatial attribution maps.
        probes: a :class:`ProbeSpec`: the hidden layers to record and the labels to probe.
        interventions: ``{name: {site: intervention}}`` whose return effect is logged.
        intervention_episodes: paired episodes per intervention.
        logger: a TorchRL :class:`~torchrl.record.loggers.Logger`, or the name of one built
            under ``log_dir`` on first use: ``"csv"`` (default), ``"tensorboard"`` or
            ``"wandb"``; ``None`` logs nothing (scalars are still returned and kept in
            :attr:`history`). A name whose package is missing raises ``ImportError`` here.
        log_dir: where a logger built from a name and the figures go.
        figures_every: save figures every this many evaluations (0: never).
        max_overhead: the bound on the callback's cost: an evaluation that falls due while
            the evaluations so far have taken more than this fraction of the wall time
            since the clock started is put off to a later call (counted in ``deferred``),
            so over a run the fraction stays near the bound (it can exceed it by at most
            one evaluation's time); ``None``: evaluate whenever due.

    Attributes:
        history: one dict of scalars per evaluation, with ``"frames"``.
        last_rollout: the last evaluation rollout, with its attributions and activations.
        last_probes: the last :class:`~tdhook_rl.latent.probes.ProbeResults` (or ``None``).

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.envs import GymEnv
        >>> env = GymEnv("Pendulum-v1")
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> actor = TensorDictModule(net, ["observation"], ["action"])
        >>> callback = InterpretabilityCallback(
        ...     env, actor, targets={"force": ("action", 0)}, every_frames=1000, eval_steps=250,
        ...     probes=ProbeSpec({"h": "module.1"}, {"cos": ("observation", 0)}, held_out=0.5),
        ...     logger=None, figures_every=0,  # 250 steps: two episodes (200 + 50 steps)
        ... )
        >>> callback(None, frames=500) is None  # not due yet
        True
        >>> scalars = callback(None, frames=1000)
        >>> sorted(k for k in scalars if k.startswith(("eval/", "probe/")))
        ['eval/episode_length', 'eval/return', 'probe/h/cos/r2']
    """

    def __init__(
        self,
        env: EnvBase,
        module: TensorDictModuleBase,
        *,
        targets: Mapping[str, Any],
        inputs: Sequence[NestedKey] = ("observation",),
        method: AttributionMethod | None = None,
        every_frames: int = 50_000,
        eval_steps: int = 500,
        feature_names: Sequence[str] | None = None,
        probes: ProbeSpec | None = None,
        interventions: Mapping[str, Mapping[Any, Any]] | None = None,
        intervention_episodes: int = 4,
        logger: Logger | str | None = "csv",
        log_dir: str | Path = "tdhook_rl_logs",
        figures_every: int = 5,
        max_overhead: float | None = 0.25,
    ) -> None:
        if every_frames < 1 or eval_steps < 1:
            raise ValueError("every_frames and eval_steps must be positive")
        if max_overhead is not None and not 0.0 < max_overhead < 1.0:
            raise ValueError(f"max_overhead must be in (0, 1) or None, got {max_overhead!r}")
        self.max_overhead = max_overhead
        self.deferred = 0  # calls at which a due evaluation was put off by max_overhead
        self.env = env
        self.module = module
        self.targets = dict(targets)
        self.inputs = list(inputs)
        self.method = method or IntegratedGradients(n_steps=16)
        self.every_frames = every_frames
        self.eval_steps = eval_steps
        self.feature_names = list(feature_names) if feature_names is not None else None
        if probes is not None:
            check_probes(probes, env, module)
        self.probes = probes
        self.interventions = dict(interventions or {})
        self.intervention_episodes = intervention_episodes
        self.log_dir = Path(log_dir)
        self._logger = check_logger(logger)
        self.figures_every = figures_every
        self.next_frames = every_frames
        self.evaluations = 0
        self.history: list[dict[str, float]] = []
        self.last_rollout: TensorDictBase | None = None
        self.last_probes: ProbeResults | None = None
        self._frames = 0
        self._clock: float | None = None  # perf_counter() at start() or the first call
        self._cost = 0.0  # seconds spent evaluating and logging, all evaluations together

    @property
    def logger(self) -> Logger | None:
        """The logger (built on first use when given by name), or ``None``."""
        if isinstance(self._logger, str):
            from torchrl.record import loggers

            cls = getattr(loggers, LOGGER_BACKENDS[self._logger][0])
            self._logger = cls(exp_name=EXPERIMENT, log_dir=str(self.log_dir))
        return self._logger

    def due(self, frames: int) -> bool:
        """Whether an evaluation is due at ``frames`` collected frames."""
        return frames >= self.next_frames

    def __call__(
        self, policy: TensorDictModuleBase | None = None, frames: int = 0, *, force: bool = False
    ) -> dict[str, float] | None:
        """Evaluates if due (or ``force``); logs and returns the scalars, else ``None``."""
        self.start()
        if not (force or self.due(frames)):
            return None
        if not force and self.over_budget():
            self.deferred += 1
            return None
        scalars = self.evaluate(policy, frames)
        start = time.perf_counter()
        logger = self.logger
        if logger is not None:
            for name, value in scalars.items():
                logger.log_scalar(name, value, step=frames)
        self._cost += time.perf_counter() - start
        return scalars

    def over_budget(self) -> bool:
        """Whether evaluating now would start while the evaluations so far have taken more
        than ``max_overhead`` of the wall time since the clock started."""
        return self.max_overhead is not None and self.overhead_fraction > self.max_overhead

    @property
    def overhead_fraction(self) -> float:
        """Seconds spent in evaluations (and their logging) over the wall time since
        :meth:`start` or the first call; 0 before."""
        if self._clock is None:
            return 0.0
        return self._cost / max(time.perf_counter() - self._clock, 1e-9)

    def evaluate(self, policy: TensorDictModuleBase | None, frames: int) -> dict[str, float]:
        """Runs one evaluation now and returns its scalars (not logged)."""
        self.start()
        start = time.perf_counter()
        while self.next_frames <= frames:
            self.next_frames += self.every_frames
        module = policy if policy is not None else self.module
        explained: TensorDictModuleBase = Attributed(
            module, self.method, inputs=self.inputs, targets=self.targets
        )
        if self.probes is not None:  # records the real forward, not the attribution passes
            explained = Recorded(explained, self.probes.sites)
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = self.env.rollout(self.eval_steps, explained, break_when_any_done=False)
        self.last_rollout = rollout
        scalars = self._rollout_scalars(rollout)
        if self.probes is not None:
            scalars |= self._probe_scalars(rollout, self.probes)
        for name, sites in self.interventions.items():
            effect = intervention_effect(
                self.env,
                module,
                sites,
                episodes=self.intervention_episodes,
                max_steps=self.eval_steps,
            )
            s = effect.summary["returns"]
            scalars[f"intervention/{_slug(name)}/return_change"] = s["change"]
            scalars[f"intervention/{_slug(name)}/return_change_low"] = s["low"]
            scalars[f"intervention/{_slug(name)}/return_change_high"] = s["high"]
        self.evaluations += 1
        if self.figures_every and self.evaluations % self.figures_every == 1 % self.figures_every:
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

    def _rollout_scalars(self, rollout: TensorDictBase) -> dict[str, float]:
        reward, done = reward_and_done(self.env, rollout)
        scalars: dict[str, float] = {}
        # episodes that finished inside the rollout: mean return and length
        ep_id = done.long().cumsum(-1) - done.long()
        finished = int(done.sum())
        if finished:
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
            scalars["eval/return"] = sum(returns) / len(returns)
            scalars["eval/episode_length"] = sum(lengths) / len(lengths)
        else:
            scalars["eval/return"] = float(reward.sum(-1).mean())
            scalars["eval/episode_length"] = float(reward.shape[-1])
        root = key_tuple("attribution")
        for head in self.targets:
            a = rollout.get((*root, head, *key_tuple(self.inputs[0])))
            a = a.reshape(-1, *a.shape[rollout.batch_dims :])
            # one scalar per feature, or per group of features for large inputs (pixels)
            groups = feature_groups(a.shape[1:], self.feature_names)
            for name, value in zip(groups.names, groups.shares(a).tolist(), strict=True):
                scalars[f"attribution/{_slug(head)}/{_slug(name)}"] = value
        return scalars

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
                stacklevel=3,
            )
            self.last_probes = None
            return {}
        self.last_probes = results
        return {
            f"probe/{_slug(row['site'])}/{_slug(row['label'])}/r2": row["r2"]
            for row in results.rows
        }

    def _figures(self, rollout: TensorDictBase, frames: int) -> None:
        import matplotlib.pyplot as plt

        from tdhook_rl import viz

        folder = self.log_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        trajectory = (
            rollout.reshape(-1, rollout.shape[-1])[0] if rollout.batch_dims > 1 else rollout
        )
        kwargs = {"input_key": self.inputs[0], "feature_names": self.feature_names}
        figures = {
            name: plot(trajectory, title=f"{name.replace('_', ' ')} at {frames} frames", **kwargs)
            for name, plot in (
                ("attribution_over_time", viz.attribution_over_time),
                ("feature_shares", viz.feature_shares),
            )
        }
        if self.last_probes is not None:
            figures["probe_r2"] = viz.probe_scores(
                self.last_probes.rows,
                score="r2",
                control=None,
                title=f"held-out probe R^2 at {frames} frames",
            )
        if trajectory.get(self.inputs[0]).ndim >= 4:  # image-like: [T, C, H, W]
            figures["attribution_maps"] = viz.attribution_maps(
                trajectory,
                input_key=self.inputs[0],
                title=f"attribution maps at {frames} frames",
            )
        for name, fig in figures.items():
            fig.savefig(folder / f"{name}_{frames:09d}.png")
            plt.close(fig)

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
        if not self.due(frames):
            return None
        if self.over_budget():
            self.deferred += 1
            return None
        return self.evaluate(None, frames)


LoopCallback = Callable[[TensorDictModuleBase, int], dict[str, float] | None]
