"""examples/concepts_across_training.py on a tiny training run: a table over every
checkpoint and its maps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

EXAMPLE = Path(__file__).parents[2] / "examples" / "concepts_across_training.py"


def test_example_runs_on_kept_checkpoints(tmp_path):
    from tdhook_rl.agents.connect_four.train import train

    torch.manual_seed(0)
    train(iterations=2, envs=8, horizon=4, eval_every=0, save_every=2, out=tmp_path / "run")
    spec = importlib.util.spec_from_file_location("concepts_across_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    args = ["--checkpoints", str(tmp_path / "run" / "checkpoints"), "--out", str(out)]
    summary = module.main([*args, "--games", "24", "--plies", "12"])
    rows = json.loads((out / "concepts_across.json").read_text())
    assert (out / "concepts_across.png").stat().st_size > 0
    assert {r["step"] for r in rows} == {0, 2} and len(rows) == 2 * 4 * 5
    assert summary["positions"] == 24 * 12
    for r in rows:  # every cell is scored, or says why not
        assert (r["score"] is not None and r["control"] is not None) or r["note"]
