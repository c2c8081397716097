"""Labelled chess positions for the chess agent: games of mixed random and Stockfish play,
every position labelled by Stockfish at a fixed depth.

**Positions.** Game ``g`` is played with its own seeded generator (``random.Random`` seeded
from ``(seed, g)``): its first ``U(0, 8)`` plies are uniformly random legal moves (opening
variety), then each ply is Stockfish's best move with probability ``1 - epsilon`` and a
uniformly random legal move with probability ``epsilon`` (``epsilon ~ U(0.05, 0.4)`` per game;
the random moves are the blunders that make evaluations spread out). A game stops at its end,
after ``--max-plies`` plies, or once the evaluation has been decisive (a mate score or
``|cp| >= 1000``) for 4 plies in a row. Every non-terminal position is kept once (duplicates,
compared on the first four FEN fields, keep their first occurrence).

**Labels** (Stockfish, 1 thread, ``--depth`` plies, hash cleared at each new game so a game's
labels do not depend on the games before it):

* ``best``: the first move of the principal variation, in UCI;
* ``cp`` / ``mate``: the score from the side to move (centipawns, or moves to mate; the other
  is ``0``, and ``mate`` is signed: positive when the side to move mates);
* ``wdl``: win/draw/loss per mille for the side to move, **converted from the score with
  Stockfish 15.1's win-rate model at a fixed ply of 30** (python-chess's
  ``PovScore.wdl(model="sf15.1", ply=30)``): ``P(win) = 1 / (1 + exp((a - x) / b))`` with
  ``x = cp * 3.61`` clamped to ``[-4000, 4000]`` and ``(a, b) = (373.4, 62.8)`` at ply 30,
  ``P(loss)`` the same for ``-cp``, ``P(draw)`` the rest; a mate score is a certain win or
  loss. The fixed ply makes the label a function of the score alone (the move number is not
  in the network's input).

The dataset is cached as a gzip-compressed ``torch.save`` file (default
``/tmp/chess_data.pt.gz``), regenerable with::

    python -m tdhook_rl.agents.chess.data --positions 100000

(about 15 minutes on one core; ``--stockfish`` names the binary, default ``stockfish`` on the
``PATH`` or ``/usr/games/stockfish``). Positions of games ``g % 10 == 0`` are held out by
``train.py``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import io
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from tdhook_rl.envs.chess import require_chess

__all__ = ["DEFAULT_PATH", "find_stockfish", "generate", "load_dataset", "main", "save_dataset"]

DEFAULT_PATH = Path("/tmp/chess_data.pt.gz")
WDL_MODEL = "sf15.1"
WDL_PLY = 30
DECISIVE_CP = 1000
DECISIVE_PLIES = 4
HELDOUT_EVERY = 10  # games g % HELDOUT_EVERY == 0 are held out


def find_stockfish(path: str | None = None) -> str | None:
    """The Stockfish binary: ``path`` if given, else ``stockfish`` on the ``PATH``, else
    ``/usr/games/stockfish`` (Debian's package); ``None`` when there is none."""
    if path is not None:
        return path if shutil.which(path) or Path(path).exists() else None
    found = shutil.which("stockfish")
    if found:
        return found
    return "/usr/games/stockfish" if Path("/usr/games/stockfish").exists() else None


def _position_key(board: Any) -> str:
    return " ".join(board.fen().split()[:4])


def generate(
    positions: int,
    depth: int = 8,
    seed: int = 0,
    max_plies: int = 160,
    stockfish: str | None = None,
) -> dict[str, Any]:
    """Plays and labels games until ``positions`` positions are collected.

    Args:
        positions: how many labelled positions to collect (the last game is cut there).
        depth: Stockfish's search depth.
        seed: seeds every game's generator (game ``g`` uses ``(seed, g)``).
        max_plies: the longest game.
        stockfish: the Stockfish binary (see :func:`find_stockfish`).

    Returns:
        a dict with ``fen``, ``best`` (lists of str), ``wdl`` (int16 ``[N, 3]``, per mille),
        ``cp``, ``mate`` (int32 ``[N]``), ``game``, ``ply`` (int32 ``[N]``) and ``meta``.
    """
    chess = require_chess()
    engines = importlib.import_module("chess.engine")

    binary = find_stockfish(stockfish)
    if binary is None:
        raise FileNotFoundError(
            "Stockfish not found: install it (`apt-get install stockfish`) or pass --stockfish."
        )
    fens: list[str] = []
    best: list[str] = []
    wdl: list[tuple[int, int, int]] = []
    cps: list[int] = []
    mates: list[int] = []
    games: list[int] = []
    plies: list[int] = []
    seen: set[str] = set()
    engine = engines.SimpleEngine.popen_uci(binary)
    try:
        engine.configure({"Threads": 1, "Hash": 16})
        version = engine.id.get("name", "?")
        game = 0
        with tqdm(total=positions, desc="positions", mininterval=5) as bar:
            while len(fens) < positions:
                rng = random.Random(f"{seed}-{game}")
                random_opening = rng.randint(0, 8)
                epsilon = rng.uniform(0.05, 0.4)
                board = chess.Board()
                decisive = 0
                for ply in range(max_plies):
                    if board.is_game_over() or len(fens) >= positions:
                        break
                    info = engine.analyse(board, engines.Limit(depth=depth), game=game)
                    score = info["score"].pov(board.turn)
                    move = info["pv"][0]
                    key = _position_key(board)
                    if key not in seen:
                        seen.add(key)
                        fens.append(board.fen())
                        best.append(move.uci())
                        w = score.wdl(model=WDL_MODEL, ply=WDL_PLY)
                        wdl.append((w.wins, w.draws, w.losses))
                        cps.append(score.score() or 0)
                        mates.append(score.mate() or 0)
                        games.append(game)
                        plies.append(ply)
                        bar.update(1)
                    cp = score.score(mate_score=100_000)
                    decisive = decisive + 1 if abs(cp) >= DECISIVE_CP else 0
                    if decisive >= DECISIVE_PLIES:
                        break
                    if ply < random_opening or rng.random() < epsilon:
                        move = rng.choice(list(board.legal_moves))
                    board.push(move)
                game += 1
    finally:
        engine.quit()
    return {
        "fen": fens,
        "best": best,
        "wdl": torch.tensor(wdl, dtype=torch.int16),
        "cp": torch.tensor(cps, dtype=torch.int32),
        "mate": torch.tensor(mates, dtype=torch.int32),
        "game": torch.tensor(games, dtype=torch.int32),
        "ply": torch.tensor(plies, dtype=torch.int32),
        "meta": {
            "engine": version,
            "depth": depth,
            "seed": seed,
            "games": game,
            "wdl_model": WDL_MODEL,
            "wdl_ply": WDL_PLY,
            "max_plies": max_plies,
        },
    }


def save_dataset(data: dict[str, Any], path: str | Path = DEFAULT_PATH) -> None:
    """Writes ``data`` (see :func:`generate`) as a gzip-compressed ``torch.save`` file."""
    buffer = io.BytesIO()
    torch.save(data, buffer)
    Path(path).write_bytes(gzip.compress(buffer.getvalue()))


def load_dataset(path: str | Path = DEFAULT_PATH) -> dict[str, Any]:
    """Reads a dataset written by :func:`save_dataset`.

    Raises:
        FileNotFoundError: with the command that generates it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no chess dataset at {path}; generate it with "
            f"`python -m tdhook_rl.agents.chess.data --out {path}` (needs Stockfish)."
        )
    return torch.load(io.BytesIO(gzip.decompress(path.read_bytes())), weights_only=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-plies", type=int, default=160)
    parser.add_argument("--stockfish", default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    start = time.time()
    data = generate(args.positions, args.depth, args.seed, args.max_plies, args.stockfish)
    save_dataset(data, args.out)
    meta = data["meta"]
    print(
        f"{len(data['fen'])} positions from {meta['games']} games ({meta['engine']}, depth "
        f"{meta['depth']}) in {time.time() - start:.0f} s -> {args.out} "
        f"({args.out.stat().st_size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
