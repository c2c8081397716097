"""The concepts-across-training section of ``tdhook-rl explain --agent connect_four``: which
layer of which training checkpoint linearly encodes open threes, immediate wins and threats,
and centre control, beside a randomly initialized network (McGrath et al. 2022's "what,
when, where" maps).

**Checkpoints**: the shipped checkpoints of a *separate short training run*
(:mod:`tdhook_rl.agents.connect_four.training_run`, rounds 0 to 40), not the 200-round agent
the rest of the report explains.

**Positions** (as ``examples/concepts_across_training.py``): ``games`` seeded games of
``plies`` plies of the last checkpoint sampling its moves, an ``explore`` fraction replaced
by random legal moves; each game is one episode of the held-out split (a quarter held out).

**Probes** (:func:`tdhook_rl.concepts.across.probe_across`) of
:func:`~tdhook_rl.concepts.labels.connect_four_concepts` of the player to move at
:data:`SITES` of every checkpoint; the control: the same probes on a
:func:`~tdhook_rl.probes.randomized_copy` of the last checkpoint. Counts: ridge R^2; the
win and loss threats: balanced accuracy of a logistic probe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.concepts.across import ConceptTable, probe_across
from tdhook_rl.concepts.geometry import cka_matrix
from tdhook_rl.concepts.labels import connect_four_concepts
from tdhook_rl.concepts.plots import plot_cka
from tdhook_rl.envs.connect_four import ConnectFourEnv, random_action
from tdhook_rl.latent.recorded import Recorded

__all__ = [
    "CKA_SITE",
    "SITES",
    "CheckpointCKA",
    "checkpoint_cka",
    "concept_labels",
    "concept_positions",
    "concept_table",
    "concepts_section",
]

#: the probed layers (module paths of the agent), input side first
SITES: dict[str, str] = {
    "conv": "module.0.module.conv",
    "trunk h1": "module.0.module.mlp.1",
    "trunk h2": "module.0.module.mlp.3",
    "value h1": "module.2.module.mlp.1",
}


def concept_positions(
    agent: Any, *, games: int = 128, plies: int = 30, explore: float = 0.3, seed: int = 0
) -> TensorDictBase:
    """``[games, plies]`` of the agent's sampled play (seeded), an ``explore`` fraction of the
    moves random legal ones; the games restart when they end.

    Examples:
        >>> from tdhook_rl.agents.connect_four import make_agent
        >>> concept_positions(make_agent(), games=3, plies=4).batch_size
        torch.Size([3, 4])
    """
    torch.manual_seed(seed)
    env = ConnectFourEnv(batch_size=[games])
    env.set_seed(seed)

    def policy(td: TensorDictBase) -> TensorDictBase:
        td = agent(td)
        swap = torch.rand(td.batch_size) < explore
        return td.set("action", torch.where(swap, random_action(td["action_mask"]), td["action"]))

    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        return env.rollout(plies, policy, break_when_any_done=False)


def concept_labels(data: TensorDictBase) -> dict[str, torch.Tensor]:
    """:func:`~tdhook_rl.concepts.labels.connect_four_concepts` of the player to move at each
    position of ``data`` (``board`` and ``player`` entries)."""
    stone = 1 - 2 * data["player"].squeeze(-1).to(torch.int8)
    return connect_four_concepts(data["board"], stone)


def concept_table(
    checkpoints: Mapping[int, Any], data: TensorDictBase, *, seed: int = 0
) -> ConceptTable:
    """:func:`~tdhook_rl.concepts.across.probe_across` of :func:`concept_labels` at
    :data:`SITES` of each ``{round: agent}``, with the random-network control."""
    return probe_across(checkpoints, data, SITES, concept_labels(data), seed=seed)


#: the layer compared across checkpoints by CKA (the trunk's last hidden layer)
CKA_SITE = "module.0.module.mlp.3"


@dataclass
class CheckpointCKA:
    """Linear CKA between modules on the same positions (``matrix[i, j]``, ``names`` in order)."""

    names: list[str]
    matrix: torch.Tensor


def checkpoint_cka(modules: dict[str, Any], data: TensorDictBase) -> CheckpointCKA:
    """:func:`~tdhook_rl.concepts.cka_matrix` of :data:`CKA_SITE` between ``modules`` (each a
    Connect Four agent) on the positions ``data``.

    Examples:
        >>> from tdhook_rl.agents.connect_four import make_agent
        >>> agent = make_agent()
        >>> data = concept_positions(agent, games=4, plies=5)
        >>> cka = checkpoint_cka({"a": agent, "b": agent, "c": make_agent()}, data)
        >>> cka.names, round(float(cka.matrix[0, 1]), 4)   # a module against itself
        (['a', 'b', 'c'], 1.0)
    """
    flat = data.reshape(-1).select(*[k for k in ("observation", "action_mask") if k in data])
    acts = {}
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for name, module in modules.items():
            out = Recorded(module, {"h": CKA_SITE})(flat.clone())
            acts[name] = out["activations", "h"]
    return CheckpointCKA(list(acts), cka_matrix(acts))


def concepts_section(
    report: Any,
    summary: dict[str, Any],
    *,
    folder: str | Path | None = None,
    games: int = 128,
    plies: int = 30,
    explore: float = 0.3,
    seed: int = 0,
) -> ConceptTable:
    """Probes the training run's checkpoints, adds the section (``concepts_across.png`` and
    a table) to ``report`` and ``summary["concepts_across_training"]``.

    Args:
        report: a :class:`~tdhook_rl.report.writer.ReportWriter`.
        summary: the report's summary (gains the table's rows).
        folder: the ``round_NNNN.pt`` checkpoints; the shipped training run by default.
        games, plies, explore, seed: the positions (:func:`concept_positions`).

    Examples:
        >>> import tempfile
        >>> from tdhook_rl.report.writer import ReportWriter
        >>> report = ReportWriter(tempfile.mkdtemp() + "/r", "t")
        >>> summary = {}
        >>> table = concepts_section(report, summary, games=32, plies=12)
        >>> table.steps, table.sites[0]
        ([0, 10, 20, 30, 40], 'conv')
        >>> sorted(summary["concepts_across_training"])[:3]
        ['checkpoints', 'games', 'n_positions']
        >>> report.discard()
    """
    from tdhook_rl.agents.connect_four.model import load
    from tdhook_rl.agents.connect_four.training_run import training_checkpoints
    from tdhook_rl.concepts.across_plots import plot_concepts_across

    start = time.perf_counter()
    paths = training_checkpoints(folder)
    checkpoints = {step: load(checkpoint=p) for step, p in paths.items()}
    last = list(checkpoints.values())[-1]
    data = concept_positions(last, games=games, plies=plies, explore=explore, seed=seed)
    # one thread: on a loaded 2-core machine the probes took 165 s on two threads, 11 s on one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = concept_table(checkpoints, data, seed=seed)
    finally:
        torch.set_num_threads(threads)
    report.section(
        "What the layers learn during training: Connect Four concepts",
        f"Linear probes of {len(table.concepts)} concepts of the player to move (open threes "
        "of each side, a win available at once, a loss threatened at once, centre control) at "
        f"{len(SITES)} layers of {len(checkpoints)} checkpoints (rounds "
        f"{', '.join(map(str, paths))}) of a separate short training run, shipped for this "
        "map (not the 200-round agent explained above). Positions: "
        f"{data.numel()} from {games} seeded games of {plies} plies of the last checkpoint "
        f"sampling its moves ({explore:.0%} random legal moves); probes are fitted on three "
        "quarters of the games and scored on the rest. How to read it: each cell is the "
        "selectivity, the probe's score minus the same probe's on a randomly initialized copy "
        "of the network; near 0 means a random network decodes the concept as well (it is "
        "just a function of the board), red means training put it there. Counts: R^2 "
        "(1 = perfect, 0 = the mean); win_available, loss_threatened: balanced accuracy "
        "(0.5 = chance). Blank: no score (see the note in summary.json).",
    )
    report.figure(
        plot_concepts_across(table, columns=3),
        "concepts_across",
        "Layer (rows, input side at the top) x training round (columns) per concept; colour "
        "and number: selectivity = score - random network.",
    )
    steps = table.steps
    rows = []
    for concept in table.concepts:
        grid = table.grid(concept, "selectivity")
        for i, site in enumerate(table.sites):
            rows.append([concept, site, *(None if v != v else float(v) for v in grid[i].tolist())])
    report.table(["concept", "layer", *(f"round {s}" for s in steps)], rows)
    cka = checkpoint_cka({f"round {k}": m for k, m in checkpoints.items()} | {
        "shipped agent": load()}, data)  # fmt: skip
    report.figure(
        plot_cka(cka.matrix, cka.names),
        "checkpoint_cka",
        f"Linear CKA of {CKA_SITE} (trunk h2) between the training run's checkpoints and the "
        "shipped 200-round agent, on the same positions: 1 = the same representation up to a "
        "rotation and a scale; how far each round is from the others and from the agent.",
    )
    summary["checkpoint_cka"] = {"site": CKA_SITE, "names": list(cka.names),
                                 "matrix": cka.matrix.tolist()}  # fmt: skip
    summary["concepts_across_training"] = {
        "checkpoints": {str(k): str(p.name) for k, p in paths.items()},
        "games": games,
        "plies": plies,
        "n_positions": data.numel(),
        "sites": SITES,
        "rows": table.rows,
        "seconds": time.perf_counter() - start,
    }
    return table
