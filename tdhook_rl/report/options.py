"""The options of each ``tdhook-rl explain`` job, declared once.

Each field of an options dataclass holds its default, and in its metadata the help text of
its command-line flag (plain text, shown by ``--help``), its minimum (``"min"``) and its
choices (``"choices"``); :class:`JobOptions` checks them all on construction, and
:mod:`tdhook_rl.cli` builds its flags from them. This module imports neither torch nor
torchrl, so ``tdhook-rl --help`` and usage errors answer at once.

The fields of :class:`JobOptions` go to every agent (``--method``, ``--n-steps``, ...); the
fields a subclass adds are the options of its agent only.

Examples:
    >>> ConnectFourOptions(games=3).games
    3
    >>> ConnectFourOptions(games=0)
    Traceback (most recent call last):
    ...
    ValueError: --games must be >= 1, got 0
    >>> option_help(ExplainOptions, "steps")
    'environment steps per copy in the attribution rollout (default: 1000)'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tdhook_rl.core.loggers import LOGGERS

__all__ = [
    "DEVICES",
    "METHODS",
    "NOT_OFFERED",
    "OPPONENTS",
    "BreakoutOptions",
    "ChessOptions",
    "ConnectFourOptions",
    "ExplainOptions",
    "JobOptions",
    "flag",
    "option",
    "option_help",
]

#: the names of :data:`tdhook_rl.attribution.METHODS` the command offers, spelled here so that
#: checking ``--method`` needs no torch (a test keeps them in the registry). Left out: ``sarfa``
#: (it needs every action of a head as a target) and ``perturbation_saliency`` (blurs images,
#: not boards or state vectors); ``exact_shapley`` enumerates 2^features coalitions, so only
#: the double pendulum's 9 features suit it.
METHODS: tuple[str, ...] = (
    "ig",
    "integrated_gradients",
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "feature_ablation",
    "exact_shapley",
    "shapley_value_sampling",
    "kernel_shap",
    "lime",
)
#: registry names the command does not offer (see above)
NOT_OFFERED: tuple[str, ...] = (
    "sarfa",
    "perturbation_saliency",
    "conductance",  # attributes to hidden sites, not to the observation
    "guided_backprop",
    "lrp",  # LRP: a composite of rules per network, not a one-name default
)
DEVICES: tuple[str, ...] = ("cpu", "cuda")
#: the scripted Connect Four opponents (see :func:`tdhook_rl.envs.connect_four.greedy_action`)
OPPONENTS: tuple[str, ...] = ("random", "greedy")


def option(
    default: Any,
    help: str,
    *,
    minimum: int | None = None,
    choices: Sequence[str] | None = None,
    default_text: str | None = None,
) -> Any:
    """A dataclass field with its flag's help, minimum and choices.

    Args:
        default: the default value (immutable: a tuple rather than a list).
        help: the flag's help, plain text; ``(default: ...)`` is added to it.
        minimum: the smallest value allowed (integers), ``None`` for no bound.
        choices: the values allowed, ``None`` for any.
        default_text: how the help states the default, when ``default`` does not say it.
    """
    metadata = {"help": help, "min": minimum, "choices": choices, "default_text": default_text}
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line flag of field ``name``: ``flag("n_steps") == "--n-steps"``."""
    return "--" + name.replace("_", "-")


def option_help(cls: type, name: str) -> str:
    """The help of field ``name`` of options class ``cls``, its default stated."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    text = field.metadata["default_text"]
    if text is None and field.default is not None and field.default != ():
        is_bool = isinstance(field.default, bool)
        text = ("on" if field.default else "off") if is_bool else field.default
    return field.metadata["help"] + (f" (default: {text})" if text is not None else "")


@dataclass
class JobOptions:
    """The options of every ``tdhook-rl explain`` job.

    Attributes:
        method: the attribution method, a name of :data:`tdhook_rl.attribution.METHODS`.
        n_steps: the path points of a path method (IG).
        seed: torch's seed (and the job's other generators).
        device: where the network runs.
        logger: ``"csv"`` or ``"tensorboard"``: also log the summary's scalars through that
            TorchRL logger into the report's ``logs`` folder; ``None`` (or ``"none"``): no.

    Raises:
        ValueError: a value below its minimum or outside its choices.
    """

    method: str = option("ig", "attribution method", choices=METHODS)
    n_steps: int = option(32, "integration steps of IG", minimum=2)
    seed: int = option(0, "random seed")
    device: str = option("cpu", "where the network runs", choices=DEVICES)
    logger: str | None = option(
        None,
        "also log the summary's scalars through this TorchRL logger into OUT/logs; "
        "tensorboard needs the tensorboard package",
        choices=LOGGERS,
        default_text="none",
    )

    def __post_init__(self) -> None:
        if self.logger == "none":
            self.logger = None
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            if value is None:
                continue
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise ValueError(
                    f"unknown {field.name.replace('_', ' ')} {value!r}; choose one of "
                    + ", ".join(meta["choices"])
                )
            if meta.get("min") is not None and value < meta["min"]:
                raise ValueError(f"{flag(field.name)} must be >= {meta['min']}, got {value}")


@dataclass
class ExplainOptions(JobOptions):
    """Budget and choices of ``tdhook-rl explain --agent double_pendulum``.

    Attributes:
        steps: environment steps per copy in the attribution rollout.
        envs: environment copies.
        episodes: paired episodes per ablation.
        groups: unit groups per hidden layer (ablated in turn).
        ablation_steps: the step cap of each ablation episode.
        probes: probe the hidden layers for the physical state.
        ablation: run the ablation sweep.
        trust: measure a few methods' faithfulness (deletion, infidelity, randomization).
        policy_target: what the policy head explains: ``"loc"``, the location of the action
            distribution (the rollouts are deterministic, and the log-probability of the
            mode action does not depend on the state), or ``"log_prob"``, the
            log-probability of the action taken.
        baseline: the IG baseline: ``"upright"`` (the upright equilibrium at rest) or
            ``"mean"`` (the training data's mean observation, zero in standardized units).
        ablation_value: replace ablated units by ``"zero"``, by their ``"mean"`` over the
            attribution rollout, or ``"both"`` (two rows per ablation).
        ablation_units: ablate ``"groups"`` of contiguous units or ``"each"`` unit alone.
        sae: add the SAE section (:mod:`tdhook_rl.report.pendulum_sae`).
        sae_features: how many SAE features it shows.
    """

    steps: int = option(1000, "environment steps per copy in the attribution rollout", minimum=1)
    envs: int = option(4, "environment copies", minimum=1)
    episodes: int = option(16, "paired episodes per ablation", minimum=2)
    groups: int = option(4, "unit groups per hidden layer", minimum=1)
    ablation_steps: int = option(300, "step cap of each ablation episode", minimum=1)
    probes: bool = option(True, "probe the hidden layers")
    ablation: bool = option(True, "run the ablation sweep")
    trust: bool = option(True, "the 'which attributions to trust' section (about 5-10 s)")
    policy_target: str = option(
        "loc",
        "what the policy head explains: loc (the action distribution's location) or log_prob "
        "(the log-probability of the action taken)",
        choices=("loc", "log_prob"),
    )
    baseline: str = option(
        "upright",
        "IG baseline: upright (the upright equilibrium at rest) or mean (the training data's "
        "mean observation)",
        choices=("upright", "mean"),
    )
    ablation_value: str = option(
        "both",
        "replace ablated units by zero, their mean, or both",
        choices=("zero", "mean", "both"),
    )
    ablation_units: str = option(
        "groups", "ablate groups of contiguous units or each unit alone", choices=("groups", "each")
    )
    sae: bool = option(
        False,
        "the sparse-autoencoder section: an SAE on the actor's last hidden layer, its top "
        "features' states, attributions and steering effects (about 5-10 s)",
    )
    sae_features: int = option(6, "features the SAE section shows", minimum=1)


@dataclass
class ChessOptions(JobOptions):
    """Choices of ``tdhook-rl explain --agent chess``.

    Attributes:
        positions: how many held-out positions (``heldout_positions.json``) to explain;
            ``None``: 8 without ``fen``, none with it.
        fen: more positions, as FEN strings (explained first).
        concepts: add the concepts section (:mod:`tdhook_rl.report.chess_concepts`).
    """

    positions: int | None = option(
        None,
        "how many held-out positions to explain",
        minimum=0,
        default_text="8, or 0 with --fen",
    )
    fen: Sequence[str] = option(
        (), "explain this position (repeatable; explained before the held-out ones)"
    )
    concepts: bool = option(
        True, "add the concepts section (probes per layer, intrinsic dimension; ~10 s)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fen = tuple(self.fen)


@dataclass
class ConnectFourOptions(JobOptions):
    """Choices of ``tdhook-rl explain --agent connect_four``.

    Attributes:
        games: games played; the agent starts the even-numbered ones.
        opponent: ``"random"`` (a uniformly random legal column) or ``"greedy"`` (wins at
            once if it can, else blocks, else random).
        positions: the figure of a game shows at most its last ``positions`` agent moves
            (all of them are in ``summary.json``).
        concepts: add the concepts-across-training section
            (:mod:`tdhook_rl.report.connect_four_concepts`).
    """

    games: int = option(2, "games to play", minimum=1)
    opponent: str = option("random", "the scripted opponent", choices=OPPONENTS)
    positions: int = option(
        8, "the figure of a game shows at most its last N agent moves", minimum=1
    )
    concepts: bool = option(
        False, "add the concepts-across-training section (probes per layer and checkpoint; ~11 s)"
    )


@dataclass
class BreakoutOptions(JobOptions):
    """Choices of ``tdhook-rl explain --agent breakout``.

    Attributes:
        movies: episodes played (seeded), one saliency movie each.
        max_frames: each episode, and its movie, stops after this many steps.
        stills: frames of the first episode whose occlusion, gradient (``--method``) and
            Greydanus maps are compared side by side in ``stills.png``.
        radius: the Greydanus mask's standard deviation, in pixels.
        stride: pixels between Greydanus mask centres.
    """

    movies: int = option(2, "episodes to play, one saliency movie (GIF) each", minimum=1)
    max_frames: int = option(120, "each episode and its movie stops after N steps", minimum=1)
    stills: int = option(
        4, "frames whose occlusion, gradient and Greydanus maps are shown side by side", minimum=1
    )
    radius: int = option(
        1, "Greydanus mask radius (Gaussian standard deviation, pixels)", minimum=1
    )
    stride: int = option(1, "pixels between Greydanus mask centres", minimum=1)
