"""The chess report's concepts section: its positions, its recorded layers (checked against
the network's own forward), the per-square dimension map's orientation, and the section in a
report written by ``explain_chess``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("chess", reason="python-chess is not installed")

from tdhook_rl import agents
from tdhook_rl.concepts import twonn
from tdhook_rl.report import chess_concepts as cc
from tdhook_rl.report.chess import ChessOptions, explain_chess, heldout_positions


@pytest.fixture(scope="module")
def agent():
    return agents.load("chess")


@pytest.fixture(scope="module")
def positions():
    fens = [p["fen"] for p in heldout_positions()[:12]]
    walk, done = cc.concept_positions(fens, walks=2, plies=6, seed=0)
    return walk, done, cc._states(walk, done)


def test_positions_are_seeded_walks(positions):
    import chess

    walk, done, td = positions
    again, done_again = cc.concept_positions(
        [p["fen"] for p in heldout_positions()[:12]], walks=2, plies=6, seed=0
    )
    assert again == walk and torch.equal(done, done_again)
    assert int(done.sum()) == 24 and bool(done[-1])
    # each walk starts at its held-out position and moves one legal ply at a time
    starts = [0, *(done.nonzero().flatten() + 1).tolist()[:-1]]
    for j, s in enumerate(starts):  # two walks per held-out position, in order
        assert walk[s] == chess.Board(heldout_positions()[j // 2]["fen"]).fen()
    for i in range(len(walk) - 1):
        if not bool(done[i]):
            board = chess.Board(walk[i])
            children = set()
            for m in board.legal_moves:
                board.push(m)
                children.add(board.fen())
                board.pop()
            assert walk[i + 1] in children, i
    assert td.shape == (len(walk),) and td["next", "done"].shape == (len(walk), 1)


def test_recorded_layers_match_the_forward(agent, positions):
    _, _, td = positions
    net = cc.trunk_and_value(agent)
    acts = cc.record(net, td)
    with torch.no_grad():
        out = agent(td.select(*agent.in_keys).clone())
        trunk = agent.module[0].module
        stem = torch.relu(trunk.stem(td["observation"]))
        after1 = torch.relu(stem + trunk.blocks[0](stem))
    assert torch.allclose(acts["block 4"], out["hidden"], atol=1e-6)
    assert torch.allclose(acts["stem"], stem, atol=1e-6)
    assert torch.allclose(acts["block 1"], after1, atol=1e-5)
    assert acts["value mlp"].shape == (td.shape[0], 128)


def test_dimension_map_orientation(agent, positions):
    _, _, td = positions
    net = cc.trunk_and_value(agent)
    acts = cc.record(net, td)
    geometry = cc.dimensions(acts, acts, td["observation"], subsets=3, seed=0)
    _, inverse = torch.unique(td["observation"].flatten(1), dim=0, return_inverse=True)
    keep = sorted({int((inverse == u).nonzero()[0]) for u in inverse.unique()})
    hidden = acts["block 4"][keep]  # (N, C, row, col); row 0 = the mover's 8th rank
    for rank, file in ((0, 0), (0, 4), (3, 3), (7, 6)):
        slow = twonn(hidden[:, :, 7 - rank, file])
        assert float(geometry["squares"][rank, file]) == pytest.approx(float(slow), rel=1e-9)
    assert geometry["n_positions"] == len(keep)
    assert set(geometry["layers"]) == set(cc.TRUNK_LAYERS)
    assert all(v.shape == (3,) for v in geometry["layers"].values())


def test_section_in_the_report(agent, tmp_path):
    path, summary = explain_chess(
        agent, tmp_path / "report", ChessOptions(method="saliency", positions=1), progress=False
    )
    names = sorted(p.name for p in path.iterdir())
    assert {"concept_map.png", "dimension_layers.png", "dimension_squares.png"} <= set(names)
    concepts = summary["concepts"]
    rows = concepts["rows"]
    assert {r["site"] for r in rows} == set(cc.SITES)
    assert len(rows) == len(cc.SITES) * 12 and all(r["control"] is not None for r in rows)
    # measured on the shipped agent: the value head's hidden layer reads the material
    # balance far better than the random network's does
    mat = next(r for r in rows if (r["concept"], r["site"]) == ("material_balance", "value mlp"))
    assert mat["score"] > 0.8 and mat["selectivity"] > 0.5
    dims = concepts["intrinsic_dimension"]
    assert len(dims["per_square"]) == 8 and set(dims["median_per_layer"]) == set(cc.TRUNK_LAYERS)
    assert "What the layers encode" in (path / "report.html").read_text()
