"""The HTML sections of the chess report (:mod:`tdhook_rl.report.chess`): the board
heatmaps, the positions, the top squares per head and the attribution by plane."""

from __future__ import annotations


def figure_section(report, rows, maps, summary, plot, columns: dict[str, str]) -> None:
    """The board heatmaps: one row per position, one column per head (titled ``columns``)."""
    report.section(
        "Which squares drive the move and the evaluation",
        "One row per position, drawn with White at the bottom; the arrow is the agent's move. "
        "Left: attribution of the log-probability of that move among the legal moves; right: "
        "attribution of the expected outcome P(win) - P(loss) of the side to move. Each "
        "square shows the attribution summed over the 18 input planes; red raised the "
        "output, blue lowered it. Each board has its own colour scale centred at 0, printed "
        "under its title: the value head's attributions are often far smaller than the "
        "move's, and a shared scale would wash them out. Empty squares can light up: the "
        "constant planes (side to move, castling rights) are all ones on every square and "
        "add their share to each (see the attribution by plane). A board marked near zero "
        "has almost nothing to attribute: its output barely differs between the position "
        "and the all-zero baseline.",
    )
    titles = [
        [
            f"move {r['move_san']}: P = {r['move_prob']:.2f}",
            f"win prob.: W {r['p_win']:.2f} D {r['p_draw']:.2f} L {r['p_loss']:.2f}",
        ]
        for r in rows
    ]
    labels = [f"{i + 1}. {r['side_to_move'].capitalize()} to move" for i, r in enumerate(rows)]
    fig = plot(
        [r["fen"] for r in rows],
        {columns[h]: maps[h] for h in columns},
        [r["move_uci"] for r in rows],
        titles=titles,
        row_labels=labels,
        colorbar_label="attribution (sum over planes)",
    )
    report.figure(
        fig,
        "board_heatmaps",
        "Per-square attribution of the chosen move's log-probability (left) and of "
        "P(win) - P(loss) (right), one row per position.",
    )
    summary["figure_scale"] = "one colour scale per board, printed under its title"


def _squares(entries: list[dict]) -> str:
    return ", ".join(
        f"{e['square']}{e['piece'] and ' ' + e['piece']} {e['attribution']:+.3f}" for e in entries
    )


def tables(report, rows, summary, method, top_k: int) -> None:
    """The positions, the top squares of each head, and the attribution by plane."""
    report.section(
        "Positions",
        "The agent's move and evaluation, from the side to move's view (value: "
        "P(win) - P(loss)); Stockfish's move for the held-out positions.",
    )
    report.table(
        [
            "#",
            "FEN",
            "agent's move",
            "Stockfish",
            "P(move)",
            "P(win)",
            "P(draw)",
            "P(loss)",
            "value",
        ],
        [
            [
                i + 1,
                r["fen"],
                f"{r['move_san']} ({r['move_uci']})",
                r["stockfish_uci"] or "-",
                r["move_prob"],
                r["p_win"],
                r["p_draw"],
                r["p_loss"],
                r["value"],
            ]
            for i, r in enumerate(rows)
        ],
    )
    delta = method.has_convergence_delta
    report.section(
        "Attributions",
        f"The {top_k} squares with the largest |attribution| per head (square, piece, signed "
        "value), the sum of all attributions"
        + (
            " and the completeness delta: sum - (f(input) - f(baseline)), zero for exact IG."
            if delta
            else "."
        ),
    )
    header = ["#", "head", "top squares", "sum"] + (["completeness delta"] if delta else [])
    table = []
    for i, r in enumerate(rows):
        for h in r["top_squares"]:
            line = [i + 1, h, _squares(r["top_squares"][h]), r["attribution_sum"][h]]
            table.append(line + ([r["completeness_delta"][h]] if delta else []))
    report.table(header, table)
    report.section(
        "Attribution by plane",
        "Each input plane's attribution summed over the board, mean over the positions. The "
        "constant planes (side to move, castling rights) spread this over all 64 squares.",
    )
    means = summary["plane_totals_mean"]
    report.table(
        ["plane", "move", "value"],
        [[p, means["move"][p], means["value"][p]] for p in means["move"]],
    )
