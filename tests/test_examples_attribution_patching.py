"""examples/attribution_patching.py at small sizes: AtP against exact patching on the shipped
double-pendulum and Connect Four agents. AtP is exact where a head is linear in the site (the
last hidden layer of each MLP head, and its output layer) and fails below the double-pendulum
critic's saturated second layer; both are in the summary."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "attribution_patching.py"


def _rows(case, head):
    return {row["name"]: row for row in case["sites"] if row["head"] == head}


def test_atp_is_exact_where_linear_and_fails_below_the_saturated_layer(tmp_path):
    spec = importlib.util.spec_from_file_location("attribution_patching_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--steps", "20", "--envs", "2", "--games", "8", "--plies", "6", "--units", "8"]
    summary = example.main([*argv, "--out", str(tmp_path)])

    pendulum = summary["double_pendulum"]
    health = pendulum["layer_health"]["critic h2"]
    assert health["units"] == 64 and health["saturated"] >= 60
    for case in pendulum["corruptions"].values():
        assert set(case["spearman_over_sites"]) == {"policy", "value"}
        policy, value = _rows(case, "policy"), _rows(case, "value")
        for rows, linear in ((policy, ("actor h2", "actor loc")), (value, ("critic h2",))):
            for name in linear:  # the head is (nearly) linear in these sites
                assert abs(rows[name]["atp"] - rows[name]["exact"]) < 0.05, (name, rows[name])
                assert rows[name]["spearman_over_samples"] > 0.99
        assert value["critic h1"]["head"] == "value"
    # below the saturated layer the gradient nearly vanishes: AtP misses most of the effect
    upright = _rows(pendulum["corruptions"]["upright"], "value")
    assert upright["critic h2 pre"]["atp"] < 0.7 * upright["critic h2 pre"]["exact"]
    assert set(pendulum["corruptions"]["upright"]["spearman_over_units"]) >= {
        "actor h1",
        "critic h2",
        "critic h2 pre",
    }

    four = summary["connect_four"]["corruptions"]["other games"]
    assert set(four["spearman_over_sites"]) == {"move", "value"}
    assert -1 <= four["spearman_over_units"]["trunk h2"]["move"] <= 1

    assert json.loads((tmp_path / "attribution_patching.json").read_text()) == summary
    for agent in ("double_pendulum", "connect_four"):
        assert (tmp_path / f"atp_{agent}.png").stat().st_size > 0
