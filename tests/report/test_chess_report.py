"""``tdhook-rl explain --agent chess`` on a reduced budget: a complete report whose numbers
agree with an independent computation (the network's own forward, captum's integrated
gradients, a square-by-square reduction)."""

from __future__ import annotations

import json

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

chess = pytest.importorskip("chess", reason="python-chess is not installed (tdhook-rl[chess])")
captum_attr = pytest.importorskip("captum.attr")

from tdhook_rl import agents  # noqa: E402
from tdhook_rl.cli import main  # noqa: E402
from tdhook_rl.envs.chess import PLANES, encode_fen, move_to_action, square_to_cell  # noqa: E402
from tdhook_rl.report.chess import heldout_positions  # noqa: E402

MIDGAME = "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4"
N_STEPS = 8
CHESS_SMALL = [
    "--agent",
    "chess",
    "--positions",
    "2",
    "--fen",
    MIDGAME,
    "--n-steps",
    str(N_STEPS),
    "--quiet",
    "--no-concepts",  # the concepts section: tests/concepts/test_chess_concepts_report.py
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("chess") / "report"
    assert main(["explain", "--out", str(out), *CHESS_SMALL]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_report_folder_and_summary(report, capsys):
    out, summary = report
    assert sorted(p.name for p in out.iterdir()) == [
        ".tdhook-rl-report",  # the marker that lets a later run replace this report
        "board_heatmaps.png",
        "gradcam_sarfa.png",
        "report.html",
        "summary.json",
    ]
    assert summary["agent"] == "chess" and summary["n_positions"] == 3
    assert "IntegratedGradients(n_steps=8" in summary["method"]
    fens = [p["fen"] for p in summary["positions"]]
    assert fens == [MIDGAME] + [p["fen"] for p in heldout_positions()[:2]]
    for p in summary["positions"]:
        assert set(p) >= {
            "move_uci",
            "move_san",
            "p_win",
            "p_draw",
            "p_loss",
            "completeness_delta",
            "top_squares",
            "square_map",
            "plane_totals",
        }
        assert abs(p["p_win"] + p["p_draw"] + p["p_loss"] - 1) < 1e-5
        assert abs(p["value"] - (p["p_win"] - p["p_loss"])) < 1e-5
        for head in ("move", "value"):
            top = p["top_squares"][head]
            values = [abs(t["attribution"]) for t in top]
            assert len(top) == 5 and values == sorted(values, reverse=True)
            flat = torch.tensor(p["square_map"][head]).flatten()
            assert values[0] == pytest.approx(float(flat.abs().max()), rel=1e-6)
            # the square map and the plane totals are two reductions of one attribution
            assert sum(p["plane_totals"][head].values()) == pytest.approx(
                float(flat.sum()), abs=1e-4
            )
            assert list(p["plane_totals"][head]) == list(PLANES)
    assert summary["positions"][0]["source"] == "--fen"
    assert summary["positions"][0]["agrees_with_stockfish"] is None
    assert summary["compared_with_stockfish"] == 2
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    for p in summary["positions"]:
        assert p["move_san"] in page
    assert not list(out.parent.glob(".tdhook-rl-report-*"))


def test_moves_and_probabilities_match_the_network(report):
    _, summary = report
    agent = agents.load("chess")
    fens = [p["fen"] for p in summary["positions"]]
    td = torch.stack([encode_fen(f) for f in fens])
    with torch.no_grad():
        out = agent(td)
    for i, p in enumerate(summary["positions"]):
        board = chess.Board(p["fen"])
        best = max(
            board.legal_moves, key=lambda m: float(out["logits"][i, move_to_action(board, m)])
        )
        assert p["move_uci"] == best.uci() and p["move_san"] == board.san(best)
        probs = out["win_logits"][i].softmax(-1).tolist()
        assert [p["p_win"], p["p_draw"], p["p_loss"]] == pytest.approx(probs, abs=1e-6)


def test_attributions_agree_with_captum(report):
    """captum's IG (Gauss-Legendre, as ours) of the same two targets from the same network,
    one call per target, reduced to squares one square at a time."""
    _, summary = report
    agent = agents.load("chess")
    positions = summary["positions"]
    td = torch.stack([encode_fen(p["fen"]) for p in positions])
    actions = torch.tensor(
        [
            move_to_action(chess.Board(p["fen"]), chess.Move.from_uci(p["move_uci"]))
            for p in positions
        ]
    )

    def forward(x, legal_actions, legal_move_codes, mask, action):
        from tensordict import TensorDict

        batch = TensorDict(
            observation=x,
            legal_actions=legal_actions,
            legal_move_codes=legal_move_codes,
            action_mask=mask,
            batch_size=x.shape[:1],
        )
        out = agent(batch)
        log_probs = out["logits"].masked_fill(~mask, float("-inf")).log_softmax(-1)
        move = log_probs.gather(-1, action[:, None]).squeeze(-1)
        return torch.stack([move, out["state_value"].squeeze(-1)], -1)

    ig = captum_attr.IntegratedGradients(forward)
    extra = (td["legal_actions"], td["legal_move_codes"], td["action_mask"], actions)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for column, head in enumerate(("move", "value")):
            attribution, delta = ig.attribute(
                td["observation"],
                baselines=0.0,
                target=column,
                n_steps=N_STEPS,
                method="gausslegendre",
                additional_forward_args=extra,
                return_convergence_delta=True,
            )
            for i, p in enumerate(positions):
                white = chess.Board(p["fen"]).turn
                ours = torch.tensor(p["square_map"][head])
                for square in range(64):
                    cell = square_to_cell(square, white)
                    expected = float(attribution[i, :, cell // 8, cell % 8].sum())
                    assert ours[square // 8, square % 8] == pytest.approx(
                        expected, rel=1e-3, abs=1e-4
                    ), (head, i, chess.square_name(square))
                assert p["completeness_delta"][head] == pytest.approx(
                    float(delta[i]), rel=1e-3, abs=1e-4
                )


def test_saliency_report_has_no_completeness_delta(tmp_path):
    out = tmp_path / "report"
    args = ["--agent", "chess", "--positions", "1", "--method", "saliency", "--quiet"]
    assert main(["explain", "--out", str(out), *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "max_abs_completeness_delta" not in summary
    assert "completeness_delta" not in summary["positions"][0]
    flat = torch.tensor(summary["positions"][0]["square_map"]["value"])
    assert (flat >= 0).all() and flat.sum() > 0  # |gradient| summed over planes
