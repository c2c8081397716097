"""The training scripts are reproducible: the same seed gives bit-identical weights, another
seed gives other weights (tiny budgets of the real training functions)."""

from __future__ import annotations

import json

import pytest
import torch

from tdhook_rl.agents.connect_four import train as connect_four_train


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_connect_four_training_is_seeded(tmp_path):
    def run(seed: int) -> dict[str, torch.Tensor]:
        agent, summary = connect_four_train.train(
            iterations=2, envs=16, horizon=6, epochs=1, eval_every=0, seed=seed, out=tmp_path
        )
        assert summary["frames"] == 2 * 16 * 6
        return {k: v.clone() for k, v in agent.state_dict().items()}

    first, again, other = run(0), run(0), run(1)
    assert _same(first, again)
    assert not _same(first, other)


def test_chess_training_is_seeded():
    pytest.importorskip("chess")
    from tdhook_rl.agents.chess import train as chess_train
    from tdhook_rl.agents.chess.model import DEFAULT_CONFIG, make_agent

    positions = json.loads(chess_train.HERE.joinpath("heldout_positions.json").read_text())
    positions = positions["positions"][:32]
    data = chess_train.encode_positions(
        [p["fen"] for p in positions], [p["best"] for p in positions]
    )
    data["wdl"] = torch.tensor([p["wdl"] for p in positions])

    def run(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        agent = make_agent(DEFAULT_CONFIG)
        chess_train.train(agent, data, data, epochs=2, batch_size=8, seed=seed)
        return {k: v.clone() for k, v in agent.state_dict().items()}

    first, again, other = run(0), run(0), run(1)
    assert _same(first, again)
    assert not _same(first, other)
