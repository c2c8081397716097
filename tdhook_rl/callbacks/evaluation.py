"""``InterpretabilityCallback``: every N frames, evaluate the agent with attribution (and
optionally interventions), log scalars through a TorchRL logger and save figures."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import AttributionMethod, IntegratedGradients
from tdhook_rl.core.keys import key_tuple
from tdhook_rl.evaluate import intervention_effect


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


class InterpretabilityCallback:
    """Tracks what an agent attends to while it learns.

    Every ``every_frames`` collected frames it runs one evaluation rollout of ``eval_steps``
    steps (deterministic actions, like TorchRL's evaluators) with the module wrapped in
    :class:`~tdhook_rl.Attributed`, and logs:

    * ``eval/return``, ``eval/episode_length`` (mean over finished episodes, else the sum);
    * ``attribution/<head>/<feature>``: each input feature's share of the mean absolute
      attribution, per head;
    * ``intervention/<name>/return_change`` (and its interval) when ``interventions`` is
      given (paired episodes, see :func:`tdhook_rl.evaluate.intervention_effect`);
    * ``tdhook/eval_seconds``: the evaluation's own wall time, so its cost is visible.

    Every ``figures_every`` evaluations it also saves PNGs (attribution over time of the
    first trajectory, feature shares by head) under ``figure_dir``.

    Use it from a plain loop as ``callback(policy, frames)`` (``frames`` = frames collected
    so far), or on a TorchRL ``Trainer`` with ``callback.register(trainer)`` (a
    ``"post_steps_log"`` op; scalars go through the trainer's logger).

    Args:
        env: the evaluation environment.
        module: the module to explain (e.g. the actor-critic); ``callback(policy, ...)`` can
            pass another one. Actions come from ``policy`` if given, else from ``module``.
        targets: ``{head: target}`` as in :class:`~tdhook_rl.Attributed`.
        inputs: attributed inputs.
        method: the attribution method (default ``IntegratedGradients(n_steps=16)``).
        every_frames: evaluation period in collected frames.
        eval_steps: steps of the evaluation rollout.
        feature_names: names of the input features (for scalar names and plots).
        interventions: ``{name: {site: intervention}}`` whose return effect is logged.
        intervention_episodes: paired episodes per intervention.
        logger: a TorchRL logger (default: ``CSVLogger("tdhook_rl", log_dir)``).
        log_dir: where the default logger and the figures go.
        figures_every: save figures every this many evaluations (0: never).

    Examples:
        >>> # callback = InterpretabilityCallback(env, actor_critic,
        >>> #     targets={"policy": ActionLogProb(), "value": "state_value"}, every_frames=10_000)
        >>> # for batch in collector: ...; callback(actor, collector_frames)
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
        interventions: Mapping[str, Mapping[Any, Any]] | None = None,
        intervention_episodes: int = 4,
        logger: Any | None = None,
        log_dir: str | Path = "tdhook_rl_logs",
        figures_every: int = 5,
    ) -> None:
        if every_frames < 1 or eval_steps < 1:
            raise ValueError("every_frames and eval_steps must be positive")
        self.env = env
        self.module = module
        self.targets = dict(targets)
        self.inputs = list(inputs)
        self.method = method or IntegratedGradients(n_steps=16)
        self.every_frames = every_frames
        self.eval_steps = eval_steps
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.interventions = dict(interventions or {})
        self.intervention_episodes = intervention_episodes
        self.log_dir = Path(log_dir)
        self._logger = logger
        self.figures_every = figures_every
        self.next_frames = every_frames
        self.evaluations = 0
        self.history: list[dict[str, float]] = []
        self._frames = 0

    @property
    def logger(self) -> Any:
        if self._logger is None:
            from torchrl.record.loggers import CSVLogger

            self._logger = CSVLogger("tdhook_rl", log_dir=str(self.log_dir))
        return self._logger

    def due(self, frames: int) -> bool:
        """Whether an evaluation is due at ``frames`` collected frames."""
        return frames >= self.next_frames

    def __call__(
        self, policy: TensorDictModuleBase | None = None, frames: int = 0, *, force: bool = False
    ) -> dict[str, float] | None:
        """Evaluates if due (or ``force``); logs and returns the scalars, else ``None``."""
        if not (force or self.due(frames)):
            return None
        scalars = self.evaluate(policy, frames)
        for name, value in scalars.items():
            self.logger.log_scalar(name, value, step=frames)
        return scalars

    def evaluate(self, policy: TensorDictModuleBase | None, frames: int) -> dict[str, float]:
        """Runs one evaluation now and returns its scalars (not logged)."""
        start = time.perf_counter()
        while self.next_frames <= frames:
            self.next_frames += self.every_frames
        module = policy if policy is not None else self.module
        explained = Attributed(module, self.method, inputs=self.inputs, targets=self.targets)
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = self.env.rollout(self.eval_steps, explained, break_when_any_done=False)
        scalars = self._rollout_scalars(rollout)
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
        scalars["tdhook/eval_seconds"] = time.perf_counter() - start
        self.history.append({"frames": float(frames), **scalars})
        return scalars

    def _rollout_scalars(self, rollout: TensorDictBase) -> dict[str, float]:
        reward = rollout["next", "reward"].squeeze(-1)
        done = rollout["next", "done"].squeeze(-1)
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
            share = a.reshape(-1, *a.shape[rollout.batch_dims :]).flatten(1).abs().mean(0)
            share = share / share.sum().clamp_min(1e-12)
            names = self.feature_names or [f"f{i}" for i in range(share.numel())]
            for name, value in zip(names, share.tolist(), strict=True):
                scalars[f"attribution/{_slug(head)}/{_slug(name)}"] = value
        return scalars

    def _figures(self, rollout: TensorDictBase, frames: int) -> None:
        from tdhook_rl import viz

        folder = self.log_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        trajectory = (
            rollout.reshape(-1, rollout.shape[-1])[0] if rollout.batch_dims > 1 else rollout
        )
        kwargs = {"input_key": self.inputs[0], "feature_names": self.feature_names}
        for name, plot in (
            ("attribution_over_time", viz.attribution_over_time),
            ("feature_shares", viz.feature_shares),
        ):
            fig = plot(trajectory, title=f"{name.replace('_', ' ')} at {frames} frames", **kwargs)
            fig.savefig(folder / f"{name}_{frames:09d}.png")
            import matplotlib.pyplot as plt

            plt.close(fig)

    def register(self, trainer: Any, name: str = "interpretability") -> None:
        """Registers the callback on a TorchRL ``Trainer`` as a ``"post_steps_log"`` op."""
        self._trainer = trainer
        trainer.register_op("post_steps_log", self._trainer_op)

    def _trainer_op(self, batch: TensorDictBase) -> dict[str, float] | None:
        trainer = getattr(self, "_trainer", None)
        frames = getattr(trainer, "collected_frames", None)
        if frames is None:
            self._frames += batch.numel()
            frames = self._frames
        if not self.due(frames):
            return None
        return self.evaluate(None, frames)


LoopCallback = Callable[[TensorDictModuleBase, int], dict[str, float] | None]
