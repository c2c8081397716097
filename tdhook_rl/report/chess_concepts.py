"""The concepts section of ``tdhook-rl explain --agent chess``: which chess concepts each
layer of the agent linearly encodes, beside a randomly initialized network, and the
intrinsic dimension of its layers, per layer and per square.

**Positions.** From each of the 50 held-out positions, ``walks`` random walks of ``plies``
uniformly random legal moves (seeded); each walk is one episode for the held-out split (a
quarter of the walks are held out, whole). Positions a walk repeats are kept.

**Probes** (:func:`tdhook_rl.concepts.across.probe_across`): the residual stream after the
stem and after each residual block of the trunk (the input of the next block; "block 4" is
the trunk's output ``hidden``, ``[48, 8, 8]`` flattened), and the value head's two hidden
layers. Counts and the material balance: ridge R^2; check and mate concepts: balanced
accuracy of a logistic probe. The control: the same probes on
:func:`~tdhook_rl.probes.randomized_copy` of the agent.

**Geometry** (:func:`tdhook_rl.concepts.twonn`, as tdhook's chess dimension-estimation
tutorial): the TwoNN intrinsic dimension of each trunk layer over the distinct positions, on
``subsets`` random halves (the boxes), the random network's beside it; and per square, the
dimension of the 48 channels of the trunk's output at that square (the network's frame: the
side to move's first rank at the bottom).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictSequential

from tdhook_rl.concepts import twonn
from tdhook_rl.concepts.across import ConceptTable, probe_recorded
from tdhook_rl.concepts.labels.chess import chess_concepts
from tdhook_rl.core.sites import ModuleSite
from tdhook_rl.latent.probes import randomized_copy
from tdhook_rl.latent.recorded import Recorded

__all__ = [
    "SITES",
    "concept_positions",
    "concepts_section",
    "dimensions",
    "record",
    "trunk_and_value",
]

_TRUNK = "module.0.module"
#: the probed layers of :func:`trunk_and_value` (the move head is not needed): the trunk's
#: residual stream, then the value head
SITES: dict[str, Any] = {
    "stem": ModuleSite(f"{_TRUNK}.blocks.0", "input"),
    "block 1": ModuleSite(f"{_TRUNK}.blocks.1", "input"),
    "block 2": ModuleSite(f"{_TRUNK}.blocks.2", "input"),
    "block 3": ModuleSite(f"{_TRUNK}.blocks.3", "input"),
    "block 4": _TRUNK,
    "value conv": "module.1.module.reduce",
    "value mlp": "module.1.module.mlp.1",
}
TRUNK_LAYERS = ("stem", "block 1", "block 2", "block 3", "block 4")
#: wider layers are probed on their first principal components
MAX_FEATURES = 128


def concept_positions(
    fens: Sequence[str], *, walks: int = 2, plies: int = 10, seed: int = 0
) -> tuple[list[str], torch.Tensor]:
    """Random walks from each position: ``(fens, done)``, ``done`` True at each walk's last
    position (the episode ends), walks in order.

    Examples:
        >>> start = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
        >>> out, done = concept_positions([start], walks=2, plies=3)
        >>> len(out), done.tolist()
        (8, [False, False, False, True, False, False, False, True])
    """
    import chess

    rng = random.Random(seed)
    out: list[str] = []
    done: list[bool] = []
    for fen in fens:
        for _ in range(walks):
            board = chess.Board(fen)
            walk = [board.fen()]
            for _ in range(plies):
                moves = list(board.legal_moves)
                if not moves:
                    break
                board.push(rng.choice(moves))
                if board.is_game_over():
                    break
                walk.append(board.fen())
            out += walk
            done += [False] * (len(walk) - 1) + [True]
    return out, torch.tensor(done)


def _states(fens: Sequence[str], done: torch.Tensor) -> TensorDictBase:
    from tdhook_rl.envs.chess import encode_fen

    td: TensorDictBase = torch.stack([encode_fen(f) for f in fens])  # type: ignore[assignment]
    td["next", "done"] = done.unsqueeze(-1)
    return td


def trunk_and_value(agent: Any) -> TensorDictSequential:
    """The chess agent's trunk and value head alone (its move head scatters 29,275 logits per
    position, which the probes do not need)."""
    return TensorDictSequential(agent.module[0], agent.module[2])


def record(net: Any, td: TensorDictBase) -> dict[str, torch.Tensor]:
    """``{site: activations}`` of :data:`SITES` on the positions ``td``."""
    with torch.no_grad():
        out = Recorded(net, SITES, out_key="_concepts")(td.select(*net.in_keys).clone())
    return {name: out["_concepts", name] for name in SITES}


def dimensions(
    trained: dict[str, torch.Tensor],
    control: dict[str, torch.Tensor],
    observation: torch.Tensor,
    *,
    subsets: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """TwoNN per trunk layer on ``subsets`` random halves of the distinct positions, for the
    agent (``trained``, from :func:`record`) and its random copy (``control``), and per
    square of the trunk's output (all distinct positions).

    Returns:
        ``{"layers": {name: [subsets]}, "control": {name: [subsets]}, "squares": [8, 8]
        (rank 1 of the side to move first), "n_positions": int}``.
    """
    _, inverse = torch.unique(observation.flatten(1), dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin")
    keep = first.sort().values
    n = len(keep)
    g = torch.Generator().manual_seed(seed)
    halves = torch.stack([torch.randperm(n, generator=g)[: n // 2] for _ in range(subsets)])
    out: dict[str, Any] = {"n_positions": n, "layers": {}, "control": {}}
    for name in TRUNK_LAYERS:
        for what, acts in (("layers", trained), ("control", control)):
            out[what][name] = twonn(acts[name][keep].flatten(1)[halves])  # (subsets,)
    hidden = trained[TRUNK_LAYERS[-1]][keep]  # (N, C, 8, 8)
    per_square = hidden.flatten(2).permute(2, 0, 1)  # (64, N, C), cell = row * 8 + col
    dims = twonn(per_square).reshape(8, 8)  # [row, col], row 0 = the mover's 8th rank
    out["squares"] = dims.flip(0)  # [rank, file] with rank 1 of the mover first
    return out


def concepts_section(
    report: Any, agent: Any, fens: Sequence[str], summary: dict[str, Any], *, seed: int = 0
) -> ConceptTable:
    """Writes the concepts section (two figures, a table) and ``summary["concepts"]``."""
    from tdhook_rl.concepts.across_plots import (
        plot_concept_map,
        plot_dimension_boxes,
        plot_square_map,
    )

    start = time.perf_counter()
    walk_fens, done = concept_positions(fens, seed=seed)
    td = _states(walk_fens, done)
    labels = chess_concepts(walk_fens)
    net = trunk_and_value(agent)
    trained, control = record(net, td), record(randomized_copy(net, seed), td)
    table = probe_recorded(
        {"shipped": trained},
        td,
        labels,
        control=control,
        seed=seed,
        kinds=dict.fromkeys(labels, "ridge"),
        max_features=MAX_FEATURES,
    )
    geometry = dimensions(trained, control, td["observation"], seed=seed)
    n_walks = int(done.sum())
    report.section(
        "What the layers encode: chess concepts",
        f"Linear probes of {len(labels)} chess concepts (python-chess, from the side to move's "
        f"view) at every layer, fitted on {len(walk_fens)} positions of {n_walks} random walks "
        "from the held-out positions and scored on the held-out quarter of the walks. Each "
        "cell: the probe's score on the agent and, in brackets, on a randomly initialized "
        "copy of the network; the colour is their difference (selectivity): what training put "
        "there beyond what any function of the board keeps. Counts and the material "
        "balance: R^2 (1 = perfect, 0 = the mean); in_check, mate_in_one, mate_threat: "
        "balanced accuracy (0.5 = chance). A concept that does not vary, or whose rarer class "
        "has fewer than 5 positions, is marked instead of scored.",
    )
    report.figure(
        plot_concept_map(table),
        "concept_map",
        "Layer x concept: probe score on the agent (random network in brackets); colour = "
        "selectivity.",
    )
    best = []
    for concept in table.concepts:
        rows = [r for r in table.rows if r["concept"] == concept]
        scored = [r for r in rows if r["selectivity"] is not None]
        if not scored:
            best.append([concept, "-", None, None, None, rows[0]["note"]])
            continue
        top = max(scored, key=lambda r: r["selectivity"])
        best.append(
            [concept, top["site"], top["score"], top["control"], top["selectivity"], top["metric"]]
        )
    report.table(
        [
            "concept",
            "most selective layer",
            "score",
            "random network",
            "selectivity",
            "metric / note",
        ],
        best,
    )
    report.section(
        "Intrinsic dimension",
        f"TwoNN intrinsic dimension (Facco et al. 2017) of the trunk's layers over "
        f"{geometry['n_positions']} distinct positions: boxes over 8 random halves, the "
        "random network's in grey; then, per square, the dimension of the 48 channels of the "
        "trunk's output at that square, in the network's frame (the side to move's first rank "
        "at the bottom).",
    )
    report.figure(
        plot_dimension_boxes(
            geometry["layers"],
            control=geometry["control"],
            title="intrinsic dimension per trunk layer",
        ),
        "dimension_layers",
        "TwoNN dimension per trunk layer (green: agent, grey: random network).",
    )
    report.figure(
        plot_square_map(geometry["squares"], title="TwoNN dimension per square (block 4)"),
        "dimension_squares",
        "TwoNN dimension of the trunk's output per square (the mover's rank 1 at the bottom).",
    )
    summary["concepts"] = {
        "n_positions": len(walk_fens),
        "n_walks": n_walks,
        "rows": table.rows,
        "intrinsic_dimension": {
            "median_per_layer": {k: float(v.median()) for k, v in geometry["layers"].items()},
            "median_per_layer_random_network": {
                k: float(v.median()) for k, v in geometry["control"].items()
            },
            "per_square": geometry["squares"].tolist(),
        },
        "seconds": time.perf_counter() - start,
    }
    return table
