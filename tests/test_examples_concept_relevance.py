"""examples/concept_relevance.py at a small size: CRP on the shipped Connect Four agent finds
blocking positions, a conv channel per decision, and zeroing that channel hurts the block more
than zeroing a random or the least relevant channel."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "concept_relevance.py"


def test_the_top_channel_carries_the_block(tmp_path):
    spec = importlib.util.spec_from_file_location("concept_relevance_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--games", "48", "--eval-games", "40", "--out", str(tmp_path)])
    assert summary["blocking_positions"] > 0
    assert 0 < summary["top_channel_share_of_site_relevance"] <= 1
    effect = summary["zeroing_one_channel"]
    assert effect["top"]["block_logit_drop"] > effect["random"]["block_logit_drop"]
    assert effect["top"]["block_logit_drop"] > effect["least"]["block_logit_drop"]
    assert effect["top"]["still_blocks"] <= effect["random"]["still_blocks"]
    assert set(summary["games_vs_greedy"]) == {
        "plain",
        f"channel {summary['top_channels_overall'][0]} off",
    }
    assert json.loads((tmp_path / "concept_relevance.json").read_text()) == summary
    assert (tmp_path / "concept_relevance.png").stat().st_size > 0
