"""tdhook_rl.envs.chess: specs, the board encoding, the legal-move mask, action <-> Move."""

from __future__ import annotations

import random
import sys

import pytest
import torch
from tensordict import NonTensorStack, TensorDict
from torchrl.envs.utils import check_env_specs

chess = pytest.importorskip("chess", reason="python-chess is not installed (tdhook-rl[chess])")

from tdhook_rl.envs.chess import (  # noqa: E402
    MAX_LEGAL_MOVES,
    N_ACTIONS,
    N_MOVE_CODES,
    PLANES,
    FenToPlanes,
    action_to_move,
    encode_fen,
    fen_to_planes,
    legal_actions,
    make_chess_env,
    move_code,
    move_to_action,
    require_chess,
    san_moves,
    square_to_cell,
)

START = chess.STARTING_FEN
POSITIONS = {
    "start": START,
    "black_to_move": "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
    "castling": "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1",
    "black_castling": "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1",
    "en_passant": "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
    "promotion": "1n2k3/P7/8/8/8/8/6p1/4K2R w K - 0 1",
    "black_promotion": "1n2k3/P7/8/8/8/8/6p1/4K2R b K - 0 1",
    "disambiguation": "4k3/8/8/8/8/8/3n4/1N2KN2 w - - 0 1",
    "in_check": "4k3/8/8/8/8/8/4r3/R3K3 w Q - 0 1",
}


def plane(planes: torch.Tensor, name: str) -> torch.Tensor:
    return planes[PLANES.index(name)]


def legal_sans(fen: str) -> set[str]:
    board = chess.Board(fen)
    return {board.san(m) for m in board.legal_moves}


def mask_sans(mask: torch.Tensor) -> set[str]:
    return {san_moves()[i] for i in mask.nonzero().squeeze(-1).tolist()}


def random_positions(count: int, seed: int = 0) -> list[str]:
    """Positions of seeded random games (restarted when they end)."""
    rng = random.Random(seed)
    board, fens = chess.Board(), []
    while len(fens) < count:
        if board.is_game_over():
            board = chess.Board()
        fens.append(board.fen())
        board.push(rng.choice(list(board.legal_moves)))
    return fens


def test_check_env_specs():
    check_env_specs(make_chess_env(), seed=0)


def test_check_env_specs_stateless():
    check_env_specs(make_chess_env(stateful=False, include_san=True), seed=0)


def test_start_position_planes():
    planes = fen_to_planes(START)
    assert planes.shape == (len(PLANES), 8, 8) and planes.dtype == torch.float32
    # white to move: white's first rank is the bottom row (row 7), files left to right
    assert plane(planes, "own_rook")[7, 0] == 1 and plane(planes, "own_rook")[7, 7] == 1
    assert plane(planes, "own_king")[7, 4] == 1 and plane(planes, "own_queen")[7, 3] == 1
    assert plane(planes, "own_knight")[7, 1] == 1 and plane(planes, "own_bishop")[7, 5] == 1
    assert plane(planes, "their_king")[0, 4] == 1 and plane(planes, "their_queen")[0, 3] == 1
    assert torch.equal(plane(planes, "own_pawn")[6], torch.ones(8))
    assert torch.equal(plane(planes, "their_pawn")[1], torch.ones(8))
    counts = {name: int(planes[i].sum()) for i, name in enumerate(PLANES)}
    assert counts["own_pawn"] == counts["their_pawn"] == 8
    assert counts["own_king"] == counts["their_king"] == counts["own_queen"] == 1
    assert counts["own_knight"] == counts["own_bishop"] == counts["their_rook"] == 2
    for name in ("white_to_move", *[n for n in PLANES if n.endswith("castling")]):
        assert counts[name] == 64, name
    assert counts["en_passant"] == 0
    # the 16 pieces of each side and nothing else on rows 2-5
    assert planes[:12, 2:6].sum() == 0


def test_planes_are_seen_from_the_side_to_move():
    planes = fen_to_planes(POSITIONS["black_to_move"])
    # black to move: black's first rank (rank 8) is the bottom row, files still a..h
    assert plane(planes, "own_king")[7, 4] == 1 and plane(planes, "own_queen")[7, 3] == 1
    assert plane(planes, "their_king")[0, 4] == 1
    assert plane(planes, "their_pawn")[3, 4] == 1  # the pawn on e4
    assert plane(planes, "their_pawn")[1, 4] == 0  # left e2
    assert plane(planes, "white_to_move").sum() == 0
    # black's view of the position is white's start position mirrored, with e4 played
    white_view = fen_to_planes(START)
    assert torch.equal(planes[:6], white_view[:6])


def test_castling_and_en_passant_planes():
    planes = fen_to_planes("r3k3/8/8/3pPp2/8/8/8/4K2R w Kq f6 0 3")
    assert plane(planes, "own_kingside_castling").all()
    assert not plane(planes, "own_queenside_castling").any()
    assert not plane(planes, "their_kingside_castling").any()
    assert plane(planes, "their_queenside_castling").all()
    ep = plane(planes, "en_passant")
    assert ep.sum() == 1 and ep[2, 5] == 1  # f6, seen from white
    assert square_to_cell(chess.F6, True) == 2 * 8 + 5
    # an en passant square without a legal capture is not shown (as in python-chess's FEN)
    assert fen_to_planes("4k3/8/8/8/4P3/8/8/4K3 b - e3 0 1")[PLANES.index("en_passant")].sum() == 0


@pytest.mark.parametrize("name", list(POSITIONS))
def test_mask_is_exactly_the_legal_moves(name):
    fen = POSITIONS[name]
    td = encode_fen(fen)
    assert td["action_mask"].shape == (N_ACTIONS,) and td["action_mask"].dtype == torch.bool
    assert mask_sans(td["action_mask"]) == legal_sans(fen)
    assert int(td["action_mask"].sum()) == chess.Board(fen).legal_moves.count()
    n = int(td["action_mask"].sum())
    assert (td["legal_actions"][n:] == N_ACTIONS).all()
    assert (td["legal_move_codes"][n:] == N_MOVE_CODES).all()
    assert td["legal_actions"].shape == td["legal_move_codes"].shape == (MAX_LEGAL_MOVES,)


def test_special_moves_are_in_the_mask():
    assert {"O-O", "O-O-O"} <= mask_sans(encode_fen(POSITIONS["castling"])["action_mask"])
    assert "exf6" in mask_sans(encode_fen(POSITIONS["en_passant"])["action_mask"])
    promotions = {"a8=Q", "a8=R", "a8=B", "a8=N", "axb8=Q+", "axb8=R+", "axb8=B", "axb8=N"}
    assert promotions <= mask_sans(encode_fen(POSITIONS["promotion"])["action_mask"])
    assert {"g1=Q+", "g1=N", "gxh1=Q+", "gxh1=N"} <= mask_sans(
        encode_fen(POSITIONS["black_promotion"])["action_mask"]
    )
    assert {"Nbxd2", "Nfxd2", "Kxd2"} <= mask_sans(
        encode_fen(POSITIONS["disambiguation"])["action_mask"]
    )


def test_env_reset_to_a_position_gives_its_mask():
    env = make_chess_env()
    fen = POSITIONS["en_passant"]
    td = env.reset(TensorDict(fen=fen), set_state=True)
    assert mask_sans(td["action_mask"]) == legal_sans(fen)
    assert torch.equal(td["observation"], fen_to_planes(fen))


def test_rollout_matches_the_encoding_and_plays_legal_moves():
    env = make_chess_env()
    env.set_seed(0)
    torch.manual_seed(0)
    rollout = env.rollout(40, break_when_any_done=False)
    fens = list(rollout["fen"])
    assert bool(rollout["action_mask"].gather(-1, rollout["action"][:, None]).all())
    for t in range(0, 40, 7):
        expected = encode_fen(fens[t])
        for key in FenToPlanes.OUT_KEYS:
            assert torch.equal(rollout[key][t], expected[key]), key
        board = chess.Board(fens[t])
        board.push(action_to_move(board, rollout["action"][t]))
        assert board.fen() == rollout["next", "fen"][t]


def test_action_move_round_trip():
    for fen in [*POSITIONS.values(), *random_positions(60, seed=1)]:
        board = chess.Board(fen)
        actions, codes = legal_actions(board)
        for move, action, code in zip(board.legal_moves, actions, codes, strict=True):
            assert move_to_action(board, move) == action
            assert action_to_move(board, action) == move
            assert san_moves()[action] == board.san(move)
            assert move_code(move, board.turn) == code
        assert len(set(actions.tolist())) == len(actions)
        assert len(set(codes.tolist())) == len(codes)


def test_move_codes_name_the_squares():
    board = chess.Board(POSITIONS["black_promotion"])
    move = chess.Move.from_uci("g2h1n")
    code = move_code(move, board.turn)
    promotion, cells = divmod(code, 4096)
    source, target = divmod(cells, 64)
    assert promotion == 1  # knight
    assert source == square_to_cell(chess.G2, False) and target == square_to_cell(chess.H1, False)
    # white's e2-e4 and black's e7-e5 have the same code: the board is seen by the mover
    assert move_code(chess.Move.from_uci("e2e4"), True) == move_code(
        chess.Move.from_uci("e7e5"), False
    )


def test_illegal_actions_and_moves_are_refused():
    board = chess.Board()
    with pytest.raises(ValueError, match="not legal"):
        action_to_move(board, san_moves().index("e5"))
    with pytest.raises(ValueError, match=r"written 'e4' there"):
        action_to_move(board, san_moves().index("e4+"))
    with pytest.raises(ValueError, match=r"must be in \[0, 29275\)"):
        action_to_move(board, N_ACTIONS)
    with pytest.raises(ValueError, match="not legal"):
        move_to_action(board, chess.Move.from_uci("e2e5"))


def test_transform_handles_batches_and_reports_a_missing_fen():
    fens = [START, POSITIONS["castling"], POSITIONS["en_passant"], POSITIONS["promotion"]]
    td = TensorDict(fen=NonTensorStack(*fens), batch_size=[4]).reshape(2, 2)
    out = FenToPlanes()(td)
    assert out["observation"].shape == (2, 2, len(PLANES), 8, 8)
    assert torch.equal(out["observation"][1, 0], fen_to_planes(fens[2]))
    assert mask_sans(out["action_mask"][0, 1]) == legal_sans(fens[1])
    with pytest.raises(KeyError, match="include_fen=True"):
        FenToPlanes()(TensorDict(batch_size=[]))


def test_missing_python_chess_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "chess", None)
    with pytest.raises(ImportError, match=r"pip install tdhook-rl\[chess\]"):
        require_chess()
