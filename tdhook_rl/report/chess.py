"""``tdhook-rl explain --agent chess``: which squares drive the chess agent's move and its
evaluation, position by position, written as a report folder.

For each position the agent plays its most probable legal move; :class:`tdhook_rl.Attributed`
then attributes, in one batched pass over all positions, two targets to the 18 input planes:

* ``move``: the log-probability of the chosen move among the legal moves
  (:class:`~tdhook_rl.targets.ActionLogProb`): it rises when the move's logit rises *or* its
  rivals' fall, so the map says why this move rather than another;
* ``value``: the agent's ``state_value = P(win) - P(loss)`` of the side to move, in
  ``[-1, 1]`` (its expected outcome; draws count zero).

Path methods (IG) start from the all-zero planes: an empty board with no side to move, no
castling rights and no en passant square; the legal moves (the move head's other input) stay
those of the position. Each attribution is summed over the planes into one signed number per
square (:func:`tdhook_rl.viz.chess_square_map`); the constant planes (side to move, castling
rights) add their share to every square, which the per-plane totals of the report show.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import AttributionMethod
from tdhook_rl.report import options
from tdhook_rl.report.chess_concepts import concepts_section
from tdhook_rl.report.chess_saliency import saliency_section
from tdhook_rl.report.chess_sections import figure_section, tables
from tdhook_rl.report.common import (
    attribution_method,
    board_move_numbers,
    finish,
    max_abs_delta,
    top_entries,
)
from tdhook_rl.report.writer import ReportWriter
from tdhook_rl.targets import ActionLogProb

__all__ = [
    "HEADS",
    "ChessOptions",
    "attribute_positions",
    "explain_chess",
    "heldout_positions",
    "select_positions",
    "summary_line",
]

#: the attributed targets: the chosen move's log-probability and the expected outcome
HEADS: dict[str, Any] = {"move": ActionLogProb(), "value": "state_value"}
#: column titles of the figure
COLUMNS = {"move": "move", "value": "win probability"}
TOP_K = 5
SQUARES = [f"{f}{r}" for r in range(1, 9) for f in "abcdefgh"]  # [rank, file] row-major


class ChessOptions(options.ChessOptions):
    """Choices of ``tdhook-rl explain --agent chess``: the fields of
    :class:`tdhook_rl.report.options.ChessOptions` (``positions``, ``fen`` and those of every
    job), and the positions checked on construction (:func:`select_positions`).

    Raises:
        ValueError: a bad value, a FEN that python-chess refuses, a finished game, more
            positions than are shipped, or nothing to explain.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        select_positions(self.positions, self.fen)  # raises ValueError on bad positions


def heldout_positions() -> list[dict[str, Any]]:
    """The 50 held-out positions shipped with the agent, with Stockfish's move and W/D/L."""
    from tdhook_rl.agents.chess.model import CHECKPOINT

    return json.loads(CHECKPOINT.with_name("heldout_positions.json").read_text())["positions"]


def select_positions(count: int | None, fens: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The positions to explain: ``fens`` first, then the first ``count`` held-out ones.

    Args:
        count: held-out positions to add (``None``: 8 when ``fens`` is empty, else 0).
        fens: FEN strings.

    Returns:
        ``[{"fen", "source", "stockfish" (UCI or None)}]``.

    Raises:
        ValueError: a FEN that python-chess refuses, a finished game (no legal move), a
            negative count, more positions than are shipped, or nothing to explain.

    Examples:
        >>> [p["source"] for p in select_positions(2)]
        ['held-out', 'held-out']
        >>> select_positions(None, ["8/8/8/8/8/8/8/8 w - - 0 1"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --fen '8/8/8/8/8/8/8/8 w - - 0 1' is not a valid position: no white king...
    """
    from tdhook_rl.envs.chess import require_chess

    chess = require_chess()
    count = (0 if fens else 8) if count is None else count
    shipped = heldout_positions()
    if not 0 <= count <= len(shipped):
        raise ValueError(f"--positions must be in [0, {len(shipped)}], got {count}")
    chosen = []
    for fen in fens:
        try:
            board = chess.Board(fen)
        except ValueError as err:
            raise ValueError(f"--fen {fen!r} is not a FEN: {err}") from None
        status = board.status()
        if status != chess.STATUS_VALID:
            problems = [f.name for f in chess.Status if f and f.name and f in status]
            problem = ", ".join(name.lower().replace("_", " ") for name in problems)
            raise ValueError(f"--fen {fen!r} is not a valid position: {problem}")
        if not any(board.legal_moves):
            raise ValueError(f"--fen {fen!r}: the game is over (no legal move)")
        chosen.append({"fen": board.fen(), "source": "--fen", "stockfish": None})
    for p in shipped[:count]:
        chosen.append({"fen": p["fen"], "source": "held-out", "stockfish": p["best"]})
    if not chosen:
        raise ValueError("nothing to explain: give --positions N >= 1 or --fen FEN")
    return chosen


def attribute_positions(
    agent: Any, fens: Sequence[str], method: AttributionMethod | str, device: str = "cpu"
) -> TensorDictBase:
    """Plays the agent's most probable move in each position and attributes both heads.

    Args:
        agent: the chess agent (``tdhook_rl.agents.load("chess")``) or any module reading
            and writing the same entries.
        fens: the positions.
        method: the attribution method.
        device: where the agent's parameters are.

    Returns:
        the agent's output ``[len(fens)]`` with ``("attribution", head, "observation")``
        (``[18, 8, 8]`` each) for ``head`` in :data:`HEADS`, and the completeness deltas of
        path methods.

    Examples:
        >>> from tdhook_rl import agents
        >>> out = attribute_positions(agents.load("chess"), [heldout_positions()[0]["fen"]],
        ...                           "saliency")
        >>> out["attribution", "value", "observation"].shape
        torch.Size([1, 18, 8, 8])
    """
    from tdhook_rl.envs.chess import encode_fen

    td = torch.stack([encode_fen(fen) for fen in fens]).to(device)
    explained = Attributed(agent, method, inputs=["observation"], targets=HEADS)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return explained(td)


def _position_summary(out: TensorDictBase, i: int, position: dict, maps, has_delta) -> dict:
    from tdhook_rl.envs.chess import PLANES, action_to_move, require_chess

    board = require_chess().Board(position["fen"])
    move = action_to_move(board, out["action"][i])
    pieces = {SQUARES[s]: p.symbol() for s, p in board.piece_map().items()}
    entry: dict[str, Any] = {
        "fen": position["fen"],
        "source": position["source"],
        "side_to_move": "white" if board.turn else "black",
        "move_uci": move.uci(),
        "move_san": board.san(move),
        "move_log_prob": float(out["action_log_prob"][i]),
        "stockfish_uci": position["stockfish"],
        "agrees_with_stockfish": (
            None if position["stockfish"] is None else move.uci() == position["stockfish"]
        ),
        **board_move_numbers(out, i, HEADS, has_delta),
    }
    entry["attribution_sum"] = {
        h: float(out["attribution", h, "observation"][i].sum()) for h in HEADS
    }
    entry["top_squares"] = {
        h: [
            {"square": sq, "piece": pieces.get(sq, ""), "attribution": v}
            for sq, v in top_entries(maps[h][i], SQUARES, TOP_K)
        ]
        for h in HEADS
    }
    entry["plane_totals"] = {
        h: dict(
            zip(PLANES, out["attribution", h, "observation"][i].sum((-1, -2)).tolist(), strict=True)
        )
        for h in HEADS
    }
    # square_map[h][rank][file], rank 0 = rank 1, file 0 = a-file (python-chess: s // 8, s % 8)
    entry["square_map"] = {h: maps[h][i].tolist() for h in HEADS}
    return entry


def explain_chess(
    agent: Any, out_dir: str | Path, opts: ChessOptions, *, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Explains the agent's move and evaluation in each position and writes a report folder
    (``report.html``, ``board_heatmaps.png``, ``gradcam_sarfa.png`` (GradCAM and SARFA,
    :mod:`~tdhook_rl.report.chess_saliency`), ``summary.json``; with ``opts.concepts`` the
    concepts section's ``concept_map.png``, ``dimension_layers.png``, ``dimension_squares.png``).

    Args:
        agent: the chess agent (``tdhook_rl.agents.load("chess")``).
        out_dir: the report folder (replaced once complete; nothing is left on failure).
        opts: the options.
        progress: show a progress bar.

    Returns:
        The report folder and the summary numbers.

    Examples:
        >>> import tempfile
        >>> from tdhook_rl import agents
        >>> path, summary = explain_chess(
        ...     agents.load("chess"), tempfile.mkdtemp() + "/report",
        ...     ChessOptions(method="saliency", positions=1, concepts=False), progress=False)
        >>> sorted(p.name for p in path.iterdir())[1:]
        ['board_heatmaps.png', 'gradcam_sarfa.png', 'report.html', 'summary.json']
        >>> summary["n_positions"], sorted(summary["positions"][0]["top_squares"])
        (1, ['move', 'value'])
    """
    from tdhook_rl.envs.chess import PLANES
    from tdhook_rl.viz import chess_heatmaps, chess_square_map

    start = time.perf_counter()
    positions = select_positions(opts.positions, opts.fen)
    torch.manual_seed(opts.seed)
    report = ReportWriter(out_dir, "tdhook-rl: what drives the chess agent", logger=opts.logger)
    try:
        bar = tqdm(total=3, desc="explain chess", disable=not progress, unit="stage")
        bar.set_postfix_str(f"attribution of {len(positions)} positions")
        method = attribution_method(opts.method, opts.n_steps)
        out = attribute_positions(agent, [p["fen"] for p in positions], method, opts.device)
        out = out.cpu()
        bar.update()
        bar.set_postfix_str("figures")
        white = torch.tensor([p["fen"].split()[1] == "w" for p in positions])
        maps = {h: chess_square_map(out["attribution", h, "observation"], white) for h in HEADS}
        rows = [
            _position_summary(out, i, p, maps, method.has_convergence_delta)
            for i, p in enumerate(positions)
        ]
        summary: dict[str, Any] = {
            "agent": "chess",
            "method": repr(method),
            "targets": {
                "move": "log-probability of the chosen move among the legal moves",
                "value": "state_value = P(win) - P(loss) of the side to move",
            },
            "baseline": "all-zero planes (empty board, no side to move, no castling rights)"
            if hasattr(method, "baseline")
            else None,
            "n_positions": len(rows),
        }
        stockfish = [r["agrees_with_stockfish"] for r in rows if r["stockfish_uci"]]
        if stockfish:
            summary["agrees_with_stockfish"] = sum(stockfish)
            summary["compared_with_stockfish"] = len(stockfish)
        if method.has_convergence_delta:
            summary["max_abs_completeness_delta"] = max_abs_delta(rows, HEADS)
        summary["plane_totals_mean"] = {
            h: dict(
                zip(
                    PLANES,
                    out["attribution", h, "observation"].sum((-1, -2)).mean(0).tolist(),
                    strict=True,
                )
            )
            for h in HEADS
        }
        figure_section(report, rows, maps, summary, chess_heatmaps, COLUMNS)
        tables(report, rows, summary, method, TOP_K)
        bar.set_postfix_str("GradCAM and SARFA")
        saliency_section(report, agent, out, rows, white, summary, chess_heatmaps, chess_square_map)
        if opts.concepts:
            bar.set_postfix_str("concepts")
            fens = [p["fen"] for p in heldout_positions()]
            concepts_section(report, agent, fens, summary, seed=opts.seed)
        bar.update()
        summary["positions"] = rows
        return finish(report, summary, start, f"{len(rows)} positions", bar), summary
    except BaseException:
        report.discard()
        raise


def summary_line(path: Path, summary: dict[str, Any]) -> str:
    """The one line ``tdhook-rl explain --agent chess`` prints at the end."""
    line = f"report: {path / 'report.html'} | {summary['n_positions']} positions"
    if "compared_with_stockfish" in summary:
        line += (
            f" | agent's move = Stockfish's in {summary['agrees_with_stockfish']}/"
            f"{summary['compared_with_stockfish']}"
        )
    first = summary["positions"][0]
    top = {h: first["top_squares"][h][0]["square"] for h in HEADS}
    line += (
        f" | position 1: {first['move_san']}, move driven most by {top['move']}, "
        f"value by {top['value']}"
    )
    if "max_abs_completeness_delta" in summary:
        worst = max(summary["max_abs_completeness_delta"].values())
        line += f" | max |completeness delta| {worst:.3f}"
    return line + f" | {summary['wall_seconds']:.0f} s"
