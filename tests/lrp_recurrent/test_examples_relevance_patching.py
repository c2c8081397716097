"""examples/relevance_patching.py at a small size: RelP and AtP against exact patching on the
double-pendulum agent; both track the exact per-unit effects of the last hidden layers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "relevance_patching.py"


def test_relp_and_atp_against_exact_patching(tmp_path):
    spec = importlib.util.spec_from_file_location("relevance_patching_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--steps", "20", "--envs", "2", "--out", str(tmp_path)])
    for case in summary["corruptions"].values():
        assert set(case) == {"atp", *(f"relp eps={e:g}" for e in example.EPSILONS)}
        relp = case["relp eps=1e-06"]
        assert set(relp["spearman_over_sites"]) == {"policy", "value"}
        # the layer right below each head is (nearly) linear for both estimates
        assert relp["spearman_over_units"]["actor h2"]["policy"] > 0.9
        assert relp["spearman_over_units"]["critic h2"]["value"] > 0.9
    assert json.loads((tmp_path / "relevance_patching.json").read_text()) == summary
