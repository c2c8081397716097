"""The chess report's GradCAM and SARFA views (tdhook_rl.report.chess_saliency): GradCAM
against captum's LayerGradCam at the trunk, SARFA read at the chosen move's slot and only on
squares with a removable piece."""

from __future__ import annotations

import chess
import torch
from captum.attr import LayerGradCam
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl import agents
from tdhook_rl.envs.chess import action_to_move, encode_fen
from tdhook_rl.report.chess import heldout_positions
from tdhook_rl.report.chess_saliency import saliency_maps
from tdhook_rl.viz import chess_square_map


def test_gradcam_matches_captum_and_sarfa_sits_on_removable_pieces():
    agent = agents.load("chess")
    fens = [p["fen"] for p in heldout_positions()[:3]]
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        out = agent(torch.stack([encode_fen(f) for f in fens]))
    maps = saliency_maps(agent, out)
    context = out.select(*[k for k in agent.in_keys if k != "observation"])

    def value(obs: torch.Tensor) -> torch.Tensor:
        td = TensorDict(observation=obs, batch_size=obs.shape[:1]).update(context)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            return agent(td)["state_value"]

    trunk = agent.get_submodule("module.0.module")
    reference = LayerGradCam(value, trunk).attribute(out["observation"], relu_attributions=True)
    torch.testing.assert_close(maps["gradcam value"], reference[:, 0], rtol=1e-4, atol=1e-6)
    white = torch.tensor([f.split()[1] == "w" for f in fens])
    sarfa = chess_square_map(maps["sarfa"][:, None], white)  # [N, rank, file]
    assert ((sarfa >= 0) & (sarfa <= 1)).all() and (sarfa > 0).any()
    checked = 0
    for i, fen in enumerate(fens):
        board = chess.Board(fen)
        removable = torch.zeros(64, dtype=torch.bool)
        for square, piece in board.piece_map().items():
            removable[square] = piece.piece_type != chess.KING
        assert (sarfa[i].flatten()[~removable] == 0).all()  # kings and empty squares: 0
        # the chosen move's own piece is salient for it (without it the move is illegal):
        # checks the slot read and the board orientation
        move = action_to_move(board, out["action"][i])
        if board.piece_type_at(move.from_square) != chess.KING:
            assert sarfa[i].flatten()[move.from_square] > 0
            checked += 1
    assert checked > 0
