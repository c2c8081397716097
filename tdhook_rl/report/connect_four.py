"""``tdhook-rl explain --agent connect_four``: the agent plays a few games against a scripted
player on the batched :class:`~tdhook_rl.envs.connect_four.ConnectFourEnv`; every move it
makes is attributed, and the report shows which cells drove the move and the evaluation.

At each of its turns the agent plays its most probable legal column, and
:class:`tdhook_rl.Attributed` attributes, in one pass over the games where it is to move:

* ``move``: the log-probability of the chosen column among the legal ones
  (:class:`~tdhook_rl.targets.ActionLogProb`);
* ``value``: ``state_value = P(win) - P(loss)`` of the player to move.

Path methods (IG) start from the all-zero planes: an empty grid seen by the second player
(the parity plane is zero too). The three planes (own discs, the opponent's, parity) are
summed into one signed number per cell.

Beside each map, GradCAM (:class:`~tdhook_rl.attribution.GradCAM`) at the trunk's last (and
only) convolution, :data:`GRADCAM_SITE`, for the same heads and positions
(:func:`gradcam_maps`): the channels weighted by their spatially pooled gradients, ReLU,
upsampled from the convolution's 3 x 4 grid of 4 x 4 windows to the 6 x 7 board.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import AttributionMethod, GradCAM
from tdhook_rl.report.common import (
    attribution_method,
    board_move_numbers,
    finish,
    max_abs_delta,
    top_entries,
)
from tdhook_rl.report.connect_four_concepts import concepts_section
from tdhook_rl.report.options import OPPONENTS, ConnectFourOptions
from tdhook_rl.report.writer import ReportWriter
from tdhook_rl.targets import ActionLogProb

__all__ = [
    "GRADCAM_SITE",
    "HEADS",
    "OPPONENTS",
    "ConnectFourOptions",
    "explain_connect_four",
    "gradcam_maps",
    "play_and_attribute",
    "summary_line",
]

HEADS: dict[str, Any] = {"move": ActionLogProb(), "value": "state_value"}
COLUMNS = {"move": "move", "value": "win probability"}
CELLS = [f"r{r}c{c}" for r in range(6) for c in range(7)]  # row 0 = top
TOP_K = 4
#: the trunk's last convolution (4 x 4 windows, 64 channels), where GradCAM is taken
GRADCAM_SITE = "module.0.module.conv"
STATE = ("observation", "board", "player", "action_mask")  # what is kept of each position


def play_and_attribute(
    agent: Any,
    method: AttributionMethod | str,
    *,
    games: int = 2,
    opponent: str = "random",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[TensorDictBase, list[dict[str, Any]]]:
    """Plays ``games`` batched games of the agent against ``opponent``, attributing each of
    the agent's moves.

    Args:
        agent: the Connect Four agent (``tdhook_rl.agents.load("connect_four")``).
        method: the attribution method.
        games: how many games; the agent is the first player in games 0, 2, ...
        opponent: ``"random"`` or ``"greedy"``.
        seed: the opponent's generator.
        device: where the games run (the agent's device).
        progress: show a progress bar over the plies.

    Returns:
        ``(moves, results)``: the agent's output at each of its moves, stacked ``[n_moves]``
        with ``game`` and ``ply`` entries (in play order) and the attributions; and one
        ``{"game", "agent_plays", "result", "plies"}`` per game.

    Examples:
        >>> from tdhook_rl import agents
        >>> moves, results = play_and_attribute(agents.load("connect_four"), "saliency")
        >>> moves["attribution", "move", "observation"].shape[1:]
        torch.Size([3, 6, 7])
        >>> sorted(results[0])
        ['agent_plays', 'game', 'plies', 'result']
    """
    from tdhook_rl.agents.connect_four.evaluate import play_games

    explained = Attributed(agent, method, inputs=["observation"], targets=HEADS)
    over = torch.zeros(games, dtype=torch.bool, device=device)
    reward = torch.zeros(games, device=device)  # of the last mover
    last_mover_is_agent = torch.zeros(games, dtype=torch.bool, device=device)
    plies = torch.zeros(games, dtype=torch.long, device=device)
    moves = []
    ply = 0

    def act(td: TensorDictBase, turn: torch.Tensor) -> torch.Tensor:
        """The agent's move where it is its turn, attributed (elsewhere a placeholder)."""
        action = td["action_mask"].long().argmax(-1)
        if turn.any():
            with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
                out = explained(td.select(*STATE)[turn].clone())
            out["game"] = turn.nonzero().squeeze(-1)
            out["ply"] = torch.full_like(out["game"], ply)
            moves.append(out)
            action[turn] = out["action"].to(action.dtype)
        return action

    loop = play_games(act, opponent, games, seed, device, restart=False)
    for ply_done, _, turn, step in tqdm(loop, total=42, desc="games", disable=not progress):
        done = step["next", "done"].squeeze(-1) & ~over
        reward = torch.where(done, step["next", "reward"].squeeze(-1), reward)
        last_mover_is_agent = torch.where(done, turn, last_mover_is_agent)
        plies = torch.where(done, torch.full_like(plies, ply_done + 1), plies)
        over |= done
        ply = ply_done + 1
    results = []
    for g in range(games):
        r, mine = float(reward[g]), bool(last_mover_is_agent[g])
        result = "draw" if r == 0 else ("win" if (r > 0) == mine else "loss")
        results.append(
            {
                "game": g + 1,
                "agent_plays": "first" if g % 2 == 0 else "second",
                "result": result,
                "plies": int(plies[g]),
            }
        )
    stacked: TensorDictBase = torch.cat([m.exclude("hidden") for m in moves]).cpu()
    order = (stacked["game"] * 64 + stacked["ply"]).argsort()
    return stacked[order], results


def gradcam_maps(agent: Any, moves: TensorDictBase) -> dict[str, torch.Tensor]:
    """GradCAM of each head at :data:`GRADCAM_SITE` for the positions of ``moves`` (the
    output of :func:`play_and_attribute`), upsampled to the board: ``{head: [n, 6, 7]}``.

    The agent is called again on the same positions with deterministic actions, so the move
    explained is the one it played (checked).

    Examples:
        >>> from tdhook_rl import agents
        >>> agent = agents.load("connect_four")
        >>> moves, _ = play_and_attribute(agent, "saliency")
        >>> cams = gradcam_maps(agent, moves)
        >>> cams["move"].shape == moves["board"].shape, bool((cams["value"] >= 0).all())
        (True, True)
    """
    explained = Attributed(agent, GradCAM(size=(6, 7)), inputs=[GRADCAM_SITE], targets=HEADS)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        out = explained(moves.select("observation", "action_mask").clone())
    if not torch.equal(out["action"], moves["action"]):
        raise RuntimeError(
            "gradcam_maps: the agent chose other columns than in the games; GradCAM explains "
            "the agent's deterministic moves (pass the output of play_and_attribute)"
        )
    return {h: out["attribution", h, GRADCAM_SITE] for h in HEADS}


def explain_connect_four(
    agent: Any, out_dir: str | Path, opts: ConnectFourOptions, *, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Plays, attributes and writes a report folder (``report.html``, one
    ``game_<n>.png`` per game, ``summary.json``; with ``opts.concepts`` the
    concepts-across-training section's ``concepts_across.png``).

    Args:
        agent: the Connect Four agent (``tdhook_rl.agents.load("connect_four")``).
        out_dir: the report folder (replaced once complete; nothing is left on failure).
        opts: the options.
        progress: show progress bars.

    Returns:
        The report folder and the summary numbers.

    Examples:
        >>> import tempfile
        >>> from tdhook_rl import agents
        >>> path, summary = explain_connect_four(
        ...     agents.load("connect_four"), tempfile.mkdtemp() + "/report",
        ...     ConnectFourOptions(method="saliency", games=1, concepts=False), progress=False)
        >>> sorted(p.name for p in path.iterdir())
        ['.tdhook-rl-report', 'game_1.png', 'report.html', 'summary.json']
        >>> summary["games"][0]["agent_plays"]
        'first'
    """
    from tdhook_rl.viz import connect_four_heatmaps

    start = time.perf_counter()
    torch.manual_seed(opts.seed)
    report = ReportWriter(
        out_dir, "tdhook-rl: what drives the Connect Four agent", logger=opts.logger
    )
    try:
        bar = tqdm(total=3, desc="explain connect_four", disable=not progress, unit="stage")
        bar.set_postfix_str(f"{opts.games} games vs {opts.opponent}")
        method = attribution_method(opts.method, opts.n_steps)
        moves, results = play_and_attribute(
            agent,
            method,
            games=opts.games,
            opponent=opts.opponent,
            seed=opts.seed,
            device=opts.device,
            progress=progress,
        )
        bar.update()
        bar.set_postfix_str("figures")
        maps = {h: moves["attribution", h, "observation"].sum(-3) for h in HEADS}  # (n, 6, 7)
        cams = gradcam_maps(agent, moves)  # (n, 6, 7) per head, >= 0
        rows = [
            _move_summary(moves, i, maps, method.has_convergence_delta)
            | {"gradcam_map": {h: cams[h][i].tolist() for h in HEADS}}
            for i in range(moves.shape[0])
        ]
        summary: dict[str, Any] = {
            "agent": "connect_four",
            "method": repr(method),
            "opponent": opts.opponent,
            "targets": {
                "move": "log-probability of the chosen column among the legal ones",
                "value": "state_value = P(win) - P(loss) of the player to move",
            },
            "games": results,
            "wins": sum(r["result"] == "win" for r in results),
            "draws": sum(r["result"] == "draw" for r in results),
            "losses": sum(r["result"] == "loss" for r in results),
            "n_moves": len(rows),
        }
        if method.has_convergence_delta:
            summary["max_abs_completeness_delta"] = max_abs_delta(rows, HEADS)
        _report(report, moves, rows, maps, results, opts, connect_four_heatmaps, method, cams)
        if opts.concepts:
            bar.set_postfix_str("concepts across training")
            concepts_section(report, summary, seed=opts.seed)
        bar.update()
        summary["moves"] = rows
        what = f"{opts.games} games, {len(rows)} agent moves"
        return finish(report, summary, start, what, bar), summary
    except BaseException:
        report.discard()
        raise


def _move_summary(moves: TensorDictBase, i: int, maps, has_delta: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "game": int(moves["game"][i]) + 1,
        "ply": int(moves["ply"][i]) + 1,
        "column": int(moves["action"][i]),
        **board_move_numbers(moves, i, HEADS, has_delta),
        "attribution_sum": {h: float(maps[h][i].sum()) for h in HEADS},
    }
    entry["top_cells"] = {
        h: [{"cell": c, "attribution": v} for c, v in top_entries(maps[h][i], CELLS, TOP_K)]
        for h in HEADS
    }
    # the env's board[row][col], row 0 = top: +1 the first player's discs, -1 the second's
    entry["board"] = moves["board"][i].tolist()
    entry["cell_map"] = {h: maps[h][i].tolist() for h in HEADS}
    return entry


def _report(report, moves, rows, maps, results, opts, plot, method, cams) -> None:
    name = _method_name(method)
    report.section(
        "Games",
        f"The agent (its most probable legal column at every turn) against the {opts.opponent} "
        "player; it starts the odd-numbered games.",
    )
    report.table(
        ["game", "agent plays", "result", "plies"],
        [[r["game"], r["agent_plays"], r["result"], r["plies"]] for r in results],
    )
    report.section(
        "Which cells drive the move and the evaluation",
        "One figure per game, one row per agent move (at most the last "
        f"{opts.positions}). Columns, left to right: {name} attribution of the "
        "log-probability of the chosen column (arrow; dashed ring: where the disc lands), "
        "GradCAM of the same log-probability, then the same two for P(win) - P(loss) of the "
        f"agent. Black discs: first player, white: second. {name}: each cell shows the "
        "attribution summed over the three input planes; red raised the output, blue lowered "
        "it. GradCAM is taken at the trunk's only convolution (64 channels of 4 x 4 windows, "
        "a 3 x 4 grid, upsampled bilinearly to the 6 x 7 board): each channel weighted by its "
        "gradient averaged over the grid, summed, and cut at zero, so it is never negative "
        "(only red) and says where the evidence for the output sits, not how each disc moved "
        "it; a position where no window pushes the output up is blank, and on the empty "
        "grid every window sees the same planes, so GradCAM is flat there. Each grid has its "
        "own colour scale centred at 0, printed under its title (the value head's attributions "
        "are often far smaller than the move's, and a shared scale would blank them). Empty "
        "cells can light up: the parity plane (all ones when the first player is to move) "
        "covers every cell, empty or not, so its share lands on each. A grid marked near zero "
        "has almost nothing to attribute: the output is the same at the position and at the "
        "baseline, the empty grid with the same legal columns (a move played with P = 1.00 "
        "there too, e.g. when it wins at once or is the only legal column, has a "
        "log-probability of 0 at both ends of the path).",
    )
    boards = moves["board"]  # (n, 6, 7): +1 the first player's discs, -1 the second's
    panels = {}
    for h in HEADS:
        panels[f"{COLUMNS[h]} ({name})"] = maps[h]
        panels[f"{COLUMNS[h]} (GradCAM)"] = cams[h]
    for result in results:
        index = [i for i, r in enumerate(rows) if r["game"] == result["game"]][-opts.positions :]
        if not index:
            continue
        titles = []
        for i in index:
            move = f"column {rows[i]['column']}: P = {rows[i]['move_prob']:.2f}"
            value = f"W {rows[i]['p_win']:.2f} D {rows[i]['p_draw']:.2f} L {rows[i]['p_loss']:.2f}"
            titles.append(
                [f"{move}, {name}", f"{move}, GradCAM", f"{value}, {name}", f"{value}, GradCAM"]
            )
        fig = plot(
            boards[index],
            {column: m[index] for column, m in panels.items()},
            [rows[i]["column"] for i in index],
            titles=titles,
            row_labels=[f"ply {rows[i]['ply']}" for i in index],
            colorbar_label="attribution (sum over planes) or GradCAM",
            suptitle=f"game {result['game']}: agent plays {result['agent_plays']}, "
            f"{result['result']}",
        )
        report.figure(
            fig,
            f"game_{result['game']}",
            f"Game {result['game']}: per-cell {name} attribution and GradCAM of the agent's moves.",
        )
    delta = method.has_convergence_delta
    header = [
        "game",
        "ply",
        "column",
        "P(column)",
        "P(win)",
        "P(draw)",
        "P(loss)",
        "top cells: move",
        "top cells: value",
    ] + (["delta: move", "delta: value"] if delta else [])
    table = []
    for r in rows:
        cells = [
            ", ".join(f"{e['cell']} {e['attribution']:+.3f}" for e in r["top_cells"][h])
            for h in HEADS
        ]
        line = [
            r["game"],
            r["ply"],
            r["column"],
            r["move_prob"],
            r["p_win"],
            r["p_draw"],
            r["p_loss"],
            *cells,
        ]
        table.append(line + ([r["completeness_delta"][h] for h in HEADS] if delta else []))
    report.section(
        "Moves",
        "Every agent move; cells are rRcC, row 0 at the top."
        + (" delta: IG's completeness delta." if delta else ""),
    )
    report.table(header, table)


def _method_name(method: AttributionMethod) -> str:
    """A short name for captions: ``"IG"`` for integrated gradients, else the class name."""
    name = type(method).__name__
    return {"IntegratedGradients": "IG", "InputXGradient": "input x gradient"}.get(name, name)


def summary_line(path: Path, summary: dict[str, Any]) -> str:
    """The one line ``tdhook-rl explain --agent connect_four`` prints at the end."""
    line = (
        f"report: {path / 'report.html'} | {len(summary['games'])} games vs "
        f"{summary['opponent']}: {summary['wins']} won, {summary['draws']} drawn, "
        f"{summary['losses']} lost | {summary['n_moves']} agent moves attributed"
    )
    if "max_abs_completeness_delta" in summary:
        worst = max(summary["max_abs_completeness_delta"].values())
        line += f" | max |completeness delta| {worst:.3f}"
    return line + f" | {summary['wall_seconds']:.0f} s"
