"""The board agents' rows of the ``faithfulness`` benchmark (Connect Four, chess).

Heads: ``move``, the logit of the move the agent plays (its most probable legal move,
``ActionValue("logits", "action")``), and ``value`` (``state_value = P(win) - P(loss)``),
attributed to the board planes (``[3, 6, 7]`` / ``[18, 8, 8]``). Feature groups are the
squares: all planes of a square are removed (set to 0: an empty square) and ranked together
(summed ``|attribution|``). Columns:

* ``del nAUC`` / ``ins nAUC``: the normalized deletion / insertion areas of
  :func:`tdhook_rl.metrics.trust.grouped_curves` over squares (smaller: faithful; the
  ``random`` row: random square orderings, the chance level);
* ``infid`` / ``infid rand``: captum's normalized infidelity, Gaussian ``I`` with std 0.1 on
  every plane, 16 draws, and the same for the attribution shuffled over the features;
* ``rho``: Spearman over squares between the map and the map of the network with every layer
  re-initialized (:func:`~tdhook_rl.metrics.trust.randomized_network_correlation`; near 0:
  the map depends on the weights).

Methods: saliency, input x gradient, IG (16 points), SmoothGrad (8 samples), and the
perturbation methods with squares as players: feature ablation, occlusion with a 2x2 window,
Shapley value sampling (2 permutations: cheap, noisy), KernelSHAP and LIME (64 coalitions).
Exact Shapley is skipped: 2^42 / 2^64 coalitions of squares.

**Extension point**: :data:`BOARD_AGENTS` maps an agent's name to a function
``(config) -> BoardCase``; the pixel agent (MinAtar Breakout) is one: its "squares" are the
10x10 cells, all channels of a cell together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from benchmarks.harness import CaseResult, ContestantResult, RunConfig, Timing

HEADS = ("move", "value")
SKIPPED = {
    "exact_shapley": "2^42 (Connect Four) / 2^64 (chess) coalitions of squares",
    "sarfa": "it scores every action at once (a softmax over per-action values), not one scalar",
    "perturbation_saliency": "its Gaussian blur is meant for pixels, not one-hot planes",
    "gradcam": "it attributes to a hidden convolution's maps, not to the input planes",
}


@dataclass
class BoardCase:
    """What one board agent brings to the table.

    Attributes:
        agent: the actor-critic (reads ``observation`` and its context keys).
        batch: the positions, the agent's inputs only ``[N]``.
        shape: the observation's ``(planes, rows, columns)``.
        note: how the positions were chosen.
    """

    agent: Any
    batch: TensorDictBase
    shape: tuple[int, int, int]
    note: str


def connect_four(config: RunConfig) -> BoardCase:
    """The positions where the shipped Connect Four agent is to move in games against a
    random player (8 games; ``--quick``: 2), at most 48 (16)."""
    from tdhook_rl import agents
    from tdhook_rl.report.connect_four import STATE, play_and_attribute

    agent = agents.load("connect_four", device=str(config.device))
    games, cap = (2, 16) if config.quick else (8, 48)
    moves, _ = play_and_attribute(agent, "saliency", games=games, seed=config.seed)
    batch = moves.select(*[k for k in STATE if k in ("observation", "action_mask")])[:cap]
    note = f"{batch.shape[0]} positions of {games} games against a random player"
    return BoardCase(agent, batch.clone().to(config.device), (3, 6, 7), note)


def chess(config: RunConfig) -> BoardCase:
    """The first 16 held-out positions (``--quick``: 4) of the shipped chess agent."""
    from tdhook_rl import agents
    from tdhook_rl.envs.chess import encode_fen
    from tdhook_rl.report.chess import heldout_positions

    agent = agents.load("chess", device=str(config.device))
    count = 4 if config.quick else 16
    fens = [p["fen"] for p in heldout_positions()[:count]]
    batch = torch.stack([encode_fen(f) for f in fens]).to(config.device)
    return BoardCase(agent, batch, (18, 8, 8), f"the first {count} held-out positions")


def breakout(config: RunConfig) -> BoardCase:
    """The pixel agent: frames of one seeded MinAtar Breakout episode played greedily, every
    4th of the first 192 (``--quick``: of the first 32); a cell's channels form one group."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from tdhook_rl import agents
    from tdhook_rl.envs.minatar import MinAtarEnv

    agent = agents.load("breakout")
    env = MinAtarEnv("breakout")
    env.set_seed(config.seed)
    steps = 32 if config.quick else 192
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(steps, agent, break_when_any_done=False)
    frames = rollout["observation"][::4]
    batch = TensorDict(observation=frames, batch_size=frames.shape[:1])
    shape = tuple(frames.shape[1:])
    note = f"{frames.shape[0]} frames (every 4th) of a greedy episode, seed {config.seed}"
    return BoardCase(agent.to(config.device), batch.to(config.device), shape, note)


BOARD_AGENTS: dict[str, Callable[[RunConfig], BoardCase]] = {
    "connect_four": connect_four,
    "chess": chess,
    "breakout": breakout,
}


def methods(shape: tuple[int, int, int], quick: bool) -> dict[str, Any]:
    """The methods that apply to board planes, perturbation methods with squares as players."""
    from tdhook_rl.attribution import (
        FeatureAblation,
        InputXGradient,
        IntegratedGradients,
        KernelShap,
        Lime,
        Occlusion,
        Saliency,
        ShapleyValueSampling,
        SmoothGrad,
    )
    from tdhook_rl.metrics.trust import square_groups

    mask = square_groups(*shape).reshape(shape)
    out = {
        "saliency": Saliency(),
        "input_x_gradient": InputXGradient(),
        "ig": IntegratedGradients(n_steps=16),
        "smoothgrad": SmoothGrad(Saliency(), n_samples=8, stdev=0.1),
        "feature_ablation": FeatureAblation(feature_mask=mask),
        "occlusion_2x2": Occlusion(window=(shape[0], 2, 2)),
        "shapley_sampling": ShapleyValueSampling(n_samples=2, feature_mask=mask),
        "kernel_shap": KernelShap(n_samples=64, feature_mask=mask),
        "lime": Lime(n_samples=64, feature_mask=mask),
    }
    if quick:
        out = {k: out[k] for k in ("saliency", "ig", "feature_ablation")}
    return out


def _ks(n_groups: int) -> list[int]:
    """0, 1, 2, 4, ... and the fractions 1/4, 1/2, 3/4, 1 of the squares: few forwards."""
    ks = {0, n_groups, *(2**i for i in range(8) if 2**i < n_groups)}
    ks |= {round(f * n_groups) for f in (0.25, 0.5, 0.75)}
    return sorted(ks)


def _scores(explained, td, shape, seed) -> tuple[dict[str, dict[str, float]], dict]:
    from tdhook_rl.metrics import infidelity
    from tdhook_rl.metrics.trust import (
        grouped_curves,
        randomized_network_correlation,
        square_groups,
    )

    groups = square_groups(*shape)
    ks = _ks(shape[1] * shape[2])
    common = {"groups": groups, "ks": ks, "n_random": 4, "seed": seed, "chunk_size": 64}
    deleted = grouped_curves(explained, td, mode="deletion", **common)
    inserted = grouped_curves(explained, td, mode="insertion", **common)
    fidelity = infidelity(explained, td, n_perturb_samples=16, std=0.1, seed=seed, normalize=True)
    rho = randomized_network_correlation(explained, td, groups=groups, seed=seed)
    out = {}
    for head in HEADS:
        out[head] = {
            "del nAUC": float(deleted.auc[head]),
            "ins nAUC": float(inserted.auc[head]),
            "infid": float(fidelity.infidelity[head].mean()),
            "infid rand": float(fidelity.random[head].mean()),
            "rho": float(rho[head].nanmean()),
        }
    chance = {
        h: {"del nAUC": float(deleted.random_auc[h]), "ins nAUC": float(inserted.random_auc[h])}
        for h in HEADS
    }
    return out, chance


def board_cases(config: RunConfig) -> tuple[list[CaseResult], list[str]]:
    """One case per board agent and head; the notes say what was skipped and why."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    import tdhook_rl as thr
    from tdhook_rl.targets import ActionValue

    targets = {"move": ActionValue("logits", "action"), "value": "state_value"}
    cases, notes = [], [f"{name} skipped: {why}" for name, why in SKIPPED.items()]
    for name, build in BOARD_AGENTS.items():
        case = build(config)
        notes.append(f"{name}: {case.note}")
        rows: dict[str, list[ContestantResult]] = {h: [] for h in HEADS}
        chance: dict[str, dict[str, float]] = {}
        for method_name, method in methods(case.shape, config.quick).items():
            explained = thr.Attributed(case.agent, method, inputs=["observation"], targets=targets)
            try:
                with set_exploration_type(ExplorationType.DETERMINISTIC):
                    start = time.perf_counter()
                    td = explained(case.batch.clone())
                    seconds = time.perf_counter() - start
                    scores, chance_now = _scores(explained, td, case.shape, config.seed)
            except Exception as err:  # reported in the table
                for head in HEADS:
                    rows[head].append(
                        ContestantResult(method_name, "error", f"{type(err).__name__}: {err}")
                    )
                continue
            for head in HEADS:
                row = ContestantResult(method_name, "ok", timing=Timing([seconds]))
                row.extras = scores[head]
                rows[head].append(row)
                chance.setdefault(head, chance_now[head])
        for head in HEADS:
            random_row = ContestantResult("random", "ok", "chance", extras=chance.get(head, {}))
            params = {"positions": int(case.batch.shape[0])}
            cases.append(CaseResult(f"{name} {head}", params, [*rows[head], random_row]))
    return cases, notes
