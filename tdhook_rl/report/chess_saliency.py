"""The chess report's second view of each position: GradCAM at the trunk's output beside
SARFA with pieces taken off the board (:mod:`tdhook_rl.report.chess`).

* GradCAM (Selvaraju et al. 2017) at ``hidden``, the residual trunk's ``[C, 8, 8]`` output:
  which squares of the last feature maps weigh for the chosen move's log-probability and for
  the expected outcome (never negative: GradCAM's ReLU).
* SARFA (Puri et al. 2020) over the legal moves, each square's piece removed in turn
  (:class:`~tdhook_rl.envs.chess_perturbation.ChessSquares`: the board re-encoded and its
  legal moves recomputed by python-chess, castling rights that needed a removed rook
  cleared, kings never removed): how specific and relevant each piece is to the chosen move,
  in ``[0, 1]``; every square of every position in one batched forward.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import SARFA, GradCAM
from tdhook_rl.attribution.board_perturbations import Structured, legal_move_targets
from tdhook_rl.targets import ActionLogProb

#: the trunk's output (``[C, 8, 8]`` per position), read by the move and the value heads
TRUNK = "hidden"
#: python-chess's bound on the legal moves of a position
MAX_LEGAL_MOVES = 218
COLUMNS = {"gradcam move": "GradCAM, move", "gradcam value": "GradCAM, win probability",
           "sarfa": "SARFA, move (pieces removed)"}  # fmt: skip

__all__ = ["COLUMNS", "TRUNK", "saliency_maps", "saliency_section"]


def saliency_maps(agent: Any, out: TensorDictBase) -> dict[str, torch.Tensor]:
    """GradCAM of both heads and SARFA of the chosen move, each ``[N, 8, 8]`` in the
    observation's layout (seen from the side to move).

    Args:
        agent: the chess agent.
        out: the agent's output on the positions (``observation``, ``legal_actions``,
            ``legal_move_codes``, ``action_mask``, ``action``), ``[N]``.

    Examples:
        >>> from tdhook_rl import agents
        >>> from tdhook_rl.envs.chess import encode_fen
        >>> agent = agents.load("chess")
        >>> out = agent(torch.stack([encode_fen("4k3/8/8/8/8/8/8/R3K3 w Q - 0 1")]))
        >>> maps = saliency_maps(agent, out)
        >>> sorted(maps), tuple(maps["sarfa"].shape)
        (['gradcam move', 'gradcam value', 'sarfa'], (1, 8, 8))
        >>> float(maps["sarfa"][0, 7, 0]) > 0   # a1: the rook every legal rook move needs
        True
    """
    from tdhook_rl.envs.chess_perturbation import ChessSquares

    inputs = out.select(*agent.in_keys).clone()
    heads = {"move": ActionLogProb(), "value": "state_value"}
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        cam = Attributed(agent, GradCAM(size=(8, 8)), inputs=[TRUNK], targets=heads)(inputs.clone())
        targets = legal_move_targets(MAX_LEGAL_MOVES)
        sarfa = Attributed(
            agent, Structured(SARFA(), ChessSquares()), inputs=["observation"], targets=targets
        )(inputs.clone())
    if not torch.equal(sarfa["action"], out["action"]):
        raise RuntimeError("the agent chose other moves when replayed; it must be deterministic")
    # the chosen move's slot among the position's legal moves
    slot = (out["legal_actions"] == _action_index(out)[:, None]).int().argmax(-1)
    per_slot = torch.stack(
        [sarfa["attribution", name, "observation"][:, 0] for name in targets]
    )  # (slots, N, 8, 8): every plane of a square carries the square's score
    chosen = per_slot[slot, torch.arange(slot.numel())]
    return {
        "gradcam move": cam["attribution", "move", TRUNK],
        "gradcam value": cam["attribution", "value", TRUNK],
        "sarfa": chosen,
    }


def _action_index(out: TensorDictBase) -> torch.Tensor:
    action = out["action"]
    return action.argmax(-1) if action.ndim == out.batch_dims + 1 else action


def saliency_section(report, agent, out, rows, white, summary, plot, square_map) -> None:
    """The section: one row per position, GradCAM (move, value) and SARFA (move) boards."""
    maps = saliency_maps(agent, out)
    boards = {COLUMNS[k]: square_map(v[:, None], white) for k, v in maps.items()}
    report.section(
        "GradCAM and SARFA: two more views of the same positions",
        "GradCAM weighs the trunk's last feature maps (8x8, one cell per square) by the mean "
        "gradient of each head and keeps the positive part: where the features that raise "
        "the head sit, never negative, on the trunk's own squares (no input planes). SARFA "
        "takes each piece off the board in turn (the board re-encoded, its legal moves "
        "recomputed; kings are never removed, so their squares read 0) and scores how much "
        "the chosen move's probability drops (specificity) while the other moves' ranking "
        "stays (relevance): 1 = the move needs that piece and nothing else changes. Empty "
        "squares read 0 for SARFA: there is nothing to remove.",
    )
    fig = plot(
        [r["fen"] for r in rows],
        boards,
        [r["move_uci"] for r in rows],
        titles=[[f"{col}: {r['move_san']}" for col in boards] for r in rows],
        row_labels=[f"{i + 1}. {r['side_to_move'].capitalize()}" for i, r in enumerate(rows)],
        colorbar_label="GradCAM (>= 0) / SARFA score in [0, 1]",
    )
    report.figure(
        fig,
        "gradcam_sarfa",
        "GradCAM of the move and of P(win) - P(loss) at the trunk's output, and SARFA of the "
        "chosen move with each piece removed, one row per position.",
    )
    for row, i in zip(rows, range(len(rows)), strict=True):
        row["gradcam_map"] = {
            h: boards[COLUMNS[f"gradcam {h}"]][i].tolist() for h in ("move", "value")
        }
        row["sarfa_map"] = boards[COLUMNS["sarfa"]][i].tolist()
    summary["saliency_views"] = {"gradcam_site": TRUNK, "sarfa": "pieces removed, legal moves"}
