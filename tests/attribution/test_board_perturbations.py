"""Structured board perturbations: chess pieces removed the python-chess way, Connect Four
discs removed without floating discs, legal-move masks recomputed, and the coalition methods
run on them (SARFA against the paper's formula in a slow per-square loop)."""

from __future__ import annotations

import chess
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.agents.chess import load as load_chess
from tdhook_rl.attribution import SARFA, ExactShapley, FeatureAblation, ShapleyValueSampling
from tdhook_rl.attribution.board_perturbations import (
    ILLEGAL_VALUE,
    Structured,
    legal_move_targets,
    masked_action_targets,
)
from tdhook_rl.envs.chess_encoding import PLANES, encode_fen, move_to_action, square_to_cell
from tdhook_rl.envs.chess_perturbation import ChessSquares, planes_to_board
from tdhook_rl.envs.connect_four import ConnectFourEnv, observation_from_board
from tdhook_rl.envs.connect_four_perturbation import ConnectFourCells

FENS = [
    "r3k2r/pp3ppp/8/3pP3/8/8/PP3PPP/R3K2R w KQkq d6 0 2",  # castling both ways, en passant
    "r3k2r/pp3ppp/8/8/3pP3/8/PP3PPP/R3K2R b KQkq e3 0 2",  # the same, black to move
    "4k3/8/8/8/8/8/8/R3K2R w KQ - 0 1",
    "7k/8/8/8/8/8/2q4P/K7 w - - 0 1",  # removing h2 stalemates white: no legal move
    "4r1k1/8/8/8/8/8/4B3/4K3 w - - 0 1",  # the bishop is pinned
]


def reference(fen: str, squares: list[int]) -> chess.Board:
    """python-chess's board without the pieces on ``squares`` (kings kept)."""
    board = chess.Board(fen)
    for square in squares:
        piece = board.piece_at(square)
        if piece is not None and piece.piece_type != chess.KING:
            board.remove_piece_at(square)
    board.castling_rights = board.clean_castling_rights()
    if board.ep_square is not None and board.piece_at(board.ep_square ^ 8) is None:
        board.ep_square = None  # the pawn that just moved two squares is gone
    return board


def absent_cells(board: chess.Board, coalitions: list[list[int]]) -> torch.Tensor:
    absent = torch.zeros(len(coalitions), 64, dtype=torch.bool)
    for p, squares in enumerate(coalitions):
        for square in squares:
            absent[p, square_to_cell(square, bool(board.turn))] = True
    return absent


@pytest.mark.parametrize("fen", FENS)
def test_chess_perturbed_encodings_equal_python_chess(fen):
    board = chess.Board(fen)
    # every single square (pieces, kings, empty squares), then pairs of pieces
    pieces = sorted(board.piece_map())
    coalitions = [[s] for s in range(64)] + [pieces[i : i + 2] for i in range(len(pieces) - 1)]
    td = encode_fen(fen)
    out = ChessSquares().perturb(td["observation"], td, absent_cells(board, coalitions))
    for p, squares in enumerate(coalitions):
        ref = reference(fen, squares)
        expected = encode_fen(ref)
        for key in ("observation", "action_mask", "legal_actions", "legal_move_codes"):
            assert torch.equal(out[key][p], expected[key]), (fen, squares, key)
        # the mask is python-chess's legal moves, numbered independently of encode_fen
        legal = sorted(move_to_action(ref, m) for m in ref.legal_moves)
        assert out["action_mask"][p].nonzero().flatten().tolist() == legal


def test_chess_rules_of_removal():
    fen = FENS[0]
    td = encode_fen(fen)
    board = chess.Board(fen)
    coalitions = [[chess.H1], [chess.A8], [chess.E1], [chess.D5], [chess.E5], [chess.C2]]
    out = ChessSquares().perturb(td["observation"], td, absent_cells(board, coalitions))[
        "observation"
    ]
    plane = {name: i for i, name in enumerate(PLANES)}
    assert not out[0, plane["own_kingside_castling"]].any()  # rook h1 gone
    assert out[0, plane["own_queenside_castling"]].all()
    assert not out[1, plane["their_queenside_castling"]].any()  # rook a8 gone
    assert torch.equal(out[2], td["observation"])  # the king is never removed
    assert not out[3, plane["en_passant"]].any()  # the pawn that could be taken en passant
    assert not out[4, plane["en_passant"]].any()  # the pawn that could take it
    assert torch.equal(out[5], td["observation"])  # c2 is empty
    assert td["observation"][plane["en_passant"]].sum() == 1


def test_chess_planes_round_trip():
    for fen in FENS:
        board = planes_to_board(encode_fen(fen)["observation"])
        assert board.board_fen() == chess.Board(fen).board_fen()
        assert board.castling_rights == chess.Board(fen).castling_rights
        assert torch.equal(encode_fen(board)["action_mask"], encode_fen(fen)["action_mask"])


def paper_sarfa(q: torch.Tensor, q_perturbed: torch.Tensor, action: int) -> float:
    """Puri et al. 2020, equation 2, from the Q-values (logits) of the position and of one
    perturbed position (actions with -1e9 are not legal there)."""
    p, p2 = q.softmax(-1), q_perturbed.softmax(-1)
    dp = float(p[action] - p2[action])
    if dp <= 0:
        return 0.0
    others = [a for a in range(q.numel()) if a != action]
    rem, rem2 = q[others].softmax(-1), q_perturbed[others].softmax(-1)
    kl = float(
        sum(
            rem2[i] * (torch.log(rem2[i]) - torch.log(rem[i]))
            for i in range(len(others))
            if rem2[i] > 0
        )
    )
    k = 1 / (1 + kl)
    return 2 * k * dp / (k + dp)


def test_chess_sarfa_against_a_slow_loop():
    agent = load_chess()
    fens = [FENS[0], FENS[4]]
    td = torch.stack([encode_fen(f) for f in fens])
    explained = thr.Attributed(
        agent,
        Structured(SARFA(), ChessSquares(), chunk_size=40),
        inputs=["observation"],
        targets=legal_move_targets(218),
    )
    out = explained(td.clone())
    for b, fen in enumerate(fens):
        board = chess.Board(fen)
        n_legal = board.legal_moves.count()
        actions = td["legal_actions"][b, :n_legal]
        with torch.no_grad():
            q = agent(encode_fen(board))["logits"][actions]
        for slot in range(min(n_legal, 6)):
            got = out["attribution", f"m{slot}", "observation"][b]
            for square in range(64):
                cell = square_to_cell(square, bool(board.turn))
                with torch.no_grad():
                    logits = agent(encode_fen(reference(fen, [square])))
                legal = logits["action_mask"][actions]
                q2 = logits["logits"][actions].masked_fill(~legal, ILLEGAL_VALUE)
                want = paper_sarfa(q, q2, slot)
                assert got[:, cell // 8, cell % 8] == pytest.approx([want] * 18, abs=1e-5)
        assert got.abs().sum() > 0  # some square matters


def c4_slow(board: torch.Tensor, cell: int, mode: str) -> torch.Tensor:
    """The board (+1/-1/0, [6, 7]) with one cell's disc removed, column by column in Python."""
    out = board.clone()
    row, col = divmod(cell, 7)
    if board[row, col] == 0:
        return out
    if mode == "cell":
        out[row, col] = 0
    elif mode == "top":
        if row == 0 or board[row - 1, col] == 0:
            out[row, col] = 0
    else:
        discs = [int(board[r, col]) for r in range(6) if board[r, col] != 0 and r != row]
        column = [0] * (6 - len(discs)) + discs
        out[:, col] = torch.tensor(column, dtype=board.dtype)
    return out


def c4_positions(n: int, steps: int) -> TensorDict:
    env = ConnectFourEnv(batch_size=[n])
    env.set_seed(0)
    torch.manual_seed(0)
    rollout = env.rollout(steps, break_when_any_done=False)
    return rollout[:, -1]["next"]


@pytest.mark.parametrize("mode", ["drop", "top", "cell"])
def test_connect_four_cells_against_a_slow_loop(mode):
    td = c4_positions(6, 17)
    absent = torch.eye(42, dtype=torch.bool)
    out = ConnectFourCells(mode).perturb(td["observation"], td, absent)
    stones = td["observation"][:, 0] - td["observation"][:, 1]
    for b in range(6):
        for cell in range(42):
            board = c4_slow(stones[b], cell, mode)
            player = torch.tensor([0 if td["observation"][b, 2].all() else 1])
            sign = 1 - 2 * player  # +1 own = first player's when the first player moves
            expected = observation_from_board((board * sign).to(torch.int8), player)
            assert torch.equal(out["observation"][cell, b], expected), (b, cell)
            assert torch.equal(out["action_mask"][cell, b], board[0] == 0)


class C4Net(torch.nn.Module):
    """Logits of the 7 columns (unmasked: the targets mask them) from the planes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(-3), torch.nn.Linear(126, 32), torch.nn.Tanh(), torch.nn.Linear(32, 7)
        )

    def forward(self, observation: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
        return 3 * self.net(observation)


def c4_policy() -> TensorDictModule:
    return TensorDictModule(C4Net(), ["observation", "action_mask"], ["logits"])


@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_connect_four_sarfa_against_a_slow_loop(batch):
    td = c4_positions(6, 30)[: batch[0] * (batch[1] if len(batch) > 1 else 1)]
    td = td.reshape(batch)
    policy = c4_policy()
    explained = thr.Attributed(
        policy,
        Structured(SARFA(), ConnectFourCells("drop")),
        inputs=["observation"],
        targets=masked_action_targets(7),
    )
    out = explained(td.select("observation", "action_mask").clone())
    flat = td.reshape(-1)
    spec = ConnectFourCells("drop")

    def q(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = policy(TensorDict(observation=obs, action_mask=mask))["logits"]
        return logits.masked_fill(~mask, ILLEGAL_VALUE)

    for b in range(flat.shape[0]):
        obs, mask = flat["observation"][b], flat["action_mask"][b]
        for action in range(7):
            got = out["attribution", f"a{action}", "observation"].reshape(-1, 3, 6, 7)[b]
            for cell in range(42):
                one = torch.zeros(1, 42, dtype=torch.bool)
                one[0, cell] = True
                pert = spec.perturb(obs, None, one)
                want = paper_sarfa(
                    q(obs, mask), q(pert["observation"][0], pert["action_mask"][0]), action
                )
                assert got[:, cell // 7, cell % 7] == pytest.approx([want] * 3, abs=1e-5)
    assert out["attribution", "a0", "observation"].abs().sum() > 0


def test_feature_ablation_and_shapley_on_cells():
    td = c4_positions(4, 20)
    policy = c4_policy()
    inputs = td.select("observation", "action_mask")
    ablation = thr.Attributed(
        policy,
        Structured(FeatureAblation(), ConnectFourCells("top")),
        inputs=["observation"],
        targets={"l3": ("logits", 3)},
    )(inputs.clone())["attribution", "l3", "observation"]
    with torch.no_grad():
        full = policy(inputs.clone())["logits"][:, 3]
    spec = ConnectFourCells("top")
    for cell in range(42):
        one = torch.zeros(1, 42, dtype=torch.bool)
        one[0, cell] = True
        pert = spec.perturb(inputs["observation"], None, one)
        with torch.no_grad():
            y = policy(
                TensorDict(
                    observation=pert["observation"][0],
                    action_mask=pert["action_mask"][0],
                    batch_size=[4],
                )
            )["logits"][:, 3]
        assert torch.allclose(ablation[:, 0, cell // 7, cell % 7], full - y, atol=1e-6)
    shapley = thr.Attributed(
        policy,
        Structured(ShapleyValueSampling(n_samples=4, seed=1), ConnectFourCells("top")),
        inputs=["observation"],
        targets={"l3": ("logits", 3)},
    )(inputs.clone())
    # every ordering's credits sum to f(x) - f(everything removed)
    assert shapley["attribution", "l3", "completeness_delta"].abs().max() < 1e-5
    # discs under the top one can never be removed in "top" mode: dummy players, value 0
    stones = inputs["observation"][:, :2].sum(1)
    below = torch.zeros_like(stones, dtype=torch.bool)
    below[:, 1:] = stones[:, :-1] > 0
    values = shapley["attribution", "l3", "observation"][:, 0]
    assert (values[below] == 0).all() and values.abs().sum() > 0


def test_inside_a_rollout():
    env = ConnectFourEnv(batch_size=[3])
    env.set_seed(1)
    explained = thr.Attributed(
        c4_policy(),
        Structured(SARFA(), ConnectFourCells()),
        inputs=["observation"],
        targets=masked_action_targets(7),
    )

    def act(td):
        td = explained(td)
        return td.set("action", td["logits"].masked_fill(~td["action_mask"], -1e9).argmax(-1))

    rollout = env.rollout(4, act, break_when_any_done=False)
    assert rollout["attribution", "a0", "observation"].shape == (3, 4, 3, 6, 7)


def test_bad_input():
    with pytest.raises(ValueError, match="without feature_mask"):
        Structured(
            FeatureAblation(feature_mask=torch.zeros(3, 1, 1, dtype=torch.long)), ConnectFourCells()
        )
    with pytest.raises(TypeError, match="coalition method"):
        Structured("sarfa", ConnectFourCells())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alone"):
        thr.Attributed(
            c4_policy(),
            Structured(SARFA(), ConnectFourCells()),
            inputs=["observation", "action_mask"],
            targets={"a": ("logits", 0)},
        )
    bad = TensorDict(
        observation=torch.zeros(2, 3, 7, 6),
        action_mask=torch.ones(2, 7, dtype=torch.bool),
        batch_size=[2],
    )
    explained = thr.Attributed(
        c4_policy(),
        Structured(SARFA(), ConnectFourCells()),
        inputs=["observation"],
        targets=masked_action_targets(7),
    )
    with pytest.raises(ValueError, match=r"shape \(3, 7, 6\)"):
        explained(bad)
    explained = thr.Attributed(
        c4_policy(),
        Structured(ExactShapley(), ConnectFourCells()),
        inputs=["observation"],
        targets={"a": ("logits", 0)},
    )
    with pytest.raises(ValueError, match="G=42"):
        explained(c4_positions(2, 3).select("observation", "action_mask"))
    with pytest.raises(ValueError, match="mode must be one of"):
        ConnectFourCells("float")  # type: ignore[arg-type]
