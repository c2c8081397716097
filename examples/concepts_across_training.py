"""Concepts across layers and training for Connect Four: which layer of which checkpoint
linearly encodes open threes, immediate wins and threats, and centre control, beside a
randomly initialized network (McGrath et al. 2022's "what, when, where" maps).

Checkpoints come from a training run that keeps some
(``python -m tdhook_rl.agents.connect_four.train --save-every 10 --out DIR`` writes
``DIR/checkpoints/round_NNNN.pt``). Positions: ``--games`` games of ``--plies`` plies of the
last checkpoint sampling its moves, a ``--explore`` fraction replaced by random legal moves;
each game is one episode of the held-out split. The concepts are
:func:`tdhook_rl.concepts.labels.connect_four_concepts` of the player to move.

Run:  python examples/concepts_across_training.py --checkpoints DIR/checkpoints [--out concepts]
Writes: OUT/concepts_across.json (the table) and OUT/concepts_across.png (the maps)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from tdhook_rl.agents.connect_four.model import load
from tdhook_rl.concepts.across import probe_across
from tdhook_rl.concepts.across_plots import plot_concepts_across
from tdhook_rl.concepts.labels import connect_four_concepts
from tdhook_rl.report.connect_four_concepts import SITES, concept_positions


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--games", type=int, default=128)
    parser.add_argument("--plies", type=int, default=30)
    parser.add_argument("--explore", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("concepts"))
    args = parser.parse_args(argv)
    paths = sorted(args.checkpoints.glob("round_*.pt"))
    if not paths:
        raise SystemExit(
            f"no round_*.pt checkpoints in {args.checkpoints}: train with --save-every"
        )
    checkpoints = {int(p.stem.split("_")[1]): load(checkpoint=p) for p in paths}
    last = list(checkpoints.values())[-1]
    data = concept_positions(
        last, games=args.games, plies=args.plies, explore=args.explore, seed=args.seed
    )
    stone = 1 - 2 * data["player"].squeeze(-1).to(torch.int8)
    concepts = connect_four_concepts(data["board"], stone)
    table = probe_across(checkpoints, data, SITES, concepts, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_json(args.out / "concepts_across.json")
    plot_concepts_across(table, path=args.out / "concepts_across.png")
    print(table)
    return {"positions": data.numel(), "rows": table.rows}


if __name__ == "__main__":
    main()
