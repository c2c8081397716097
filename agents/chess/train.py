"""Supervised training of the chess agent on Stockfish labels, and its held-out evaluation.

The dataset comes from :mod:`.data` (positions of games mixing random and Stockfish moves,
labelled by Stockfish at a fixed depth). Positions of games ``g % 10 == 0`` are held out:
whole games, so no held-out position has a training position of the same game beside it
(and the dataset holds each position once). The network (:mod:`.model`) is trained on the
rest with

* the cross-entropy of Stockfish's best move among the legal moves (the move head's scores
  of the legal moves, ``MoveHead.legal_logits``, softmaxed over those moves alone: the same
  distribution as the actor's ``MaskedCategorical``), plus
* the cross-entropy of ``win_logits`` against Stockfish's W/D/L (soft targets),

with AdamW and a one-cycle learning rate, seeded (same data, same seed -> same weights on one
machine). The inputs come from :func:`~tdhook_rl.envs.chess.fen_to_planes` and
:func:`~tdhook_rl.envs.chess.move_code`, the functions the environment's
:class:`~tdhook_rl.envs.chess.FenToPlanes` uses.

The evaluation on the held-out positions measures top-1 (and top-3) agreement with
Stockfish's move against the random-legal-move baseline (the mean of ``1 / n_legal``), and the
calibration of the value head: Brier scores, the expected calibration error (ECE, 10 equal
bins of the predicted ``P(win)``) and a reliability table (per bin: the mean predicted
``P(win)`` against the mean Stockfish-derived ``P(win)``). It also plays the shipped
held-out positions (``heldout_positions.json``, 50 positions that the tests reuse) through
the TorchRL path: environment encoding, actor, ``action_to_move``.

Run (about 35 minutes on one CPU thread, after ``python -m tdhook_rl.agents.chess.data``)::

    python -m tdhook_rl.agents.chess.train

It writes ``checkpoint.pt``, ``QUALITY.md`` and ``heldout_positions.json`` next to this file
(``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torchrl.modules import ActorValueOperator
from tqdm import tqdm

from tdhook_rl.agents.chess.data import DEFAULT_PATH, HELDOUT_EVERY, load_dataset
from tdhook_rl.agents.chess.evaluate import (
    evaluate,
    evaluate_through_env,
    forward_legal,
    quality_report,
)
from tdhook_rl.agents.chess.model import DEFAULT_CONFIG, make_agent
from tdhook_rl.envs.chess import (
    MAX_LEGAL_MOVES,
    N_MOVE_CODES,
    fen_to_planes,
    move_code,
    move_to_action,
    require_chess,
)

__all__ = ["encode_positions", "main", "train"]

HERE = Path(__file__).parent
HELDOUT_JSON = "heldout_positions.json"
SHIPPED_POSITIONS = 50


def encode_positions(fens: list[str], best: list[str]) -> dict[str, torch.Tensor]:
    """The training tensors of labelled positions.

    Args:
        fens: FEN strings.
        best: Stockfish's move in each, in UCI.

    Returns:
        ``planes`` (uint8 ``[N, 18, 8, 8]``, :func:`fen_to_planes`), ``codes`` (int16
        ``[N, 218]``, the legal moves' :func:`move_code`, padded with ``N_MOVE_CODES``),
        ``target`` (int64 ``[N]``, the position of the best move in ``codes``) and
        ``n_legal`` (int64 ``[N]``).

    Examples:
        >>> start = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
        >>> out = encode_positions([start], ["e2e4"])
        >>> out["planes"].shape, int(out["n_legal"][0])
        (torch.Size([1, 18, 8, 8]), 20)
    """
    chess = require_chess()
    n = len(fens)
    planes = torch.zeros(n, 18, 8, 8, dtype=torch.uint8)
    codes = torch.full((n, MAX_LEGAL_MOVES), N_MOVE_CODES, dtype=torch.int16)
    target = torch.empty(n, dtype=torch.int64)
    n_legal = torch.empty(n, dtype=torch.int64)
    for i, (fen, uci) in enumerate(zip(fens, best, strict=True)):
        board = chess.Board(fen)
        planes[i] = fen_to_planes(board).to(torch.uint8)
        moves = list(board.legal_moves)
        white = bool(board.turn)
        codes[i, : len(moves)] = torch.tensor([move_code(m, white) for m in moves])
        target[i] = moves.index(chess.Move.from_uci(uci))
        n_legal[i] = len(moves)
    return {"planes": planes, "codes": codes, "target": target, "n_legal": n_legal}


def train(
    agent: ActorValueOperator,
    data: dict[str, torch.Tensor],
    heldout: dict[str, torch.Tensor],
    epochs: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    value_weight: float = 1.0,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Trains ``agent`` in place; returns one log row per epoch (held-out metrics included)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(agent.parameters(), lr=lr, weight_decay=weight_decay)
    n = data["target"].shape[0]
    steps = epochs * (n // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    log = []
    for epoch in range(epochs):
        agent.train()
        order = torch.randperm(n, generator=generator)
        total = {"move": 0.0, "value": 0.0}
        bar = tqdm(range(n // batch_size), desc=f"epoch {epoch + 1}/{epochs}", mininterval=10)
        for step in bar:
            idx = order[step * batch_size : (step + 1) * batch_size]
            logits, win_logits = forward_legal(agent, data["planes"][idx], data["codes"][idx])
            move_loss = torch.nn.functional.cross_entropy(logits, data["target"][idx])
            value_loss = -(data["wdl"][idx] * win_logits.log_softmax(-1)).sum(-1).mean()
            loss = move_loss + value_weight * value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total["move"] += move_loss.item()
            total["value"] += value_loss.item()
        steps_done = n // batch_size
        metrics = evaluate(agent, heldout)
        row = {
            "epoch": epoch + 1,
            "train_move_ce": total["move"] / steps_done,
            "train_value_ce": total["value"] / steps_done,
            **{k: v for k, v in metrics.items() if k != "reliability"},
        }
        log.append(row)
        tqdm.write(
            f"epoch {epoch + 1}: train move CE {row['train_move_ce']:.3f} value CE "
            f"{row['train_value_ce']:.3f} | held-out top-1 {row['top1']:.3f} top-3 "
            f"{row['top3']:.3f} move CE {row['move_ce']:.3f} value CE {row['value_ce']:.3f} "
            f"ECE {row['ece_win']:.3f}"
        )
    return log


def _split(dataset: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encodes the positions and splits them by game: ``g % HELDOUT_EVERY == 0`` held out."""
    encoded = encode_positions(dataset["fen"], dataset["best"])
    encoded["wdl"] = dataset["wdl"].float() / 1000
    encoded["wdl"] /= encoded["wdl"].sum(-1, keepdim=True)
    held = dataset["game"] % HELDOUT_EVERY == 0
    return {k: v[~held] for k, v in encoded.items()}, {k: v[held] for k, v in encoded.items()}


def _shipped_positions(dataset: dict[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    chess = require_chess()
    held = [i for i, g in enumerate(dataset["game"].tolist()) if g % HELDOUT_EVERY == 0]
    chosen = sorted(random.Random(seed).sample(held, count))
    positions = []
    for i in chosen:
        board = chess.Board(dataset["fen"][i])
        move = chess.Move.from_uci(dataset["best"][i])
        wdl = dataset["wdl"][i].tolist()
        positions.append(
            {
                "fen": dataset["fen"][i],
                "best": move.uci(),
                "best_san": board.san(move),
                "action": move_to_action(board, move),
                "wdl": [w / 1000 for w in wdl],
                "n_legal": board.legal_moves.count(),
            }
        )
    return positions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    for name, value in DEFAULT_CONFIG.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--limit", type=int, default=None, help="use the first N positions")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.time()
    dataset = load_dataset(args.data)
    if args.limit is not None:
        dataset = {k: v if k == "meta" else v[: args.limit] for k, v in dataset.items()}
    train_data, heldout = _split(dataset)
    print(
        f"{train_data['target'].shape[0]} training and {heldout['target'].shape[0]} held-out "
        f"positions encoded in {time.time() - start:.0f} s"
    )
    config = {name: getattr(args, name) for name in DEFAULT_CONFIG}
    agent = make_agent(config)
    log = train(agent, train_data, heldout, args.epochs, args.batch_size, args.lr, seed=args.seed)
    agent.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "checkpoint.pt"
    torch.save({"config": config, "state_dict": agent.state_dict()}, checkpoint)
    positions = _shipped_positions(dataset, SHIPPED_POSITIONS, args.seed)
    header = {
        "about": "held-out positions (games g % 10 == 0) with Stockfish's move (UCI, SAN, "
        "ChessEnv action) and W/D/L label; written by tdhook_rl.agents.chess.train",
        "engine": dataset["meta"]["engine"],
        "depth": dataset["meta"]["depth"],
    }
    rows = ",\n".join("  " + json.dumps(p) for p in positions)  # one position per line
    (args.out / HELDOUT_JSON).write_text(
        json.dumps(header)[:-1] + ',\n "positions": [\n' + rows + "\n]}\n"
    )
    result = {
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "threads": args.threads,
        "minutes": (time.time() - start) / 60,
        "config": config,
        "parameters": sum(p.numel() for p in agent.parameters()),
        "checkpoint_bytes": checkpoint.stat().st_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "metrics": evaluate(agent, heldout),
        "shipped_count": len(positions),
        "shipped_file": HELDOUT_JSON,
        "shipped_top1": evaluate_through_env(agent, positions),
        "shipped_random": sum(1 / p["n_legal"] for p in positions) / len(positions),
    }
    splits = (train_data["target"].shape[0], heldout["target"].shape[0])
    report = quality_report(dataset["meta"], splits, result, log)
    (args.out / "QUALITY.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
