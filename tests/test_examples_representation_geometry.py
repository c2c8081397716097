"""examples/representation_geometry.py at small sizes: TwoNN per layer and CKA between the
layers of the shipped Connect Four agent, and against a randomly re-initialized copy."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "representation_geometry.py"


def test_geometry_per_layer_of_the_connect_four_agent(tmp_path):
    spec = importlib.util.spec_from_file_location("representation_geometry_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(
        ["--games", "32", "--plies", "12", "--splits", "2", "--out", str(tmp_path)]
    )

    assert summary["positions"] > 100
    sites = list(example.SITES)
    assert summary["layers"] == ["observation", *sites]
    for name in sites:
        d = summary["intrinsic_dimension"][name]
        # a few degrees of freedom, far below the layer's width
        assert 1 < d["twonn_fit"] < 30 and 1 < d["twonn_mle"] < 30, (name, d)
        assert d["units"] >= 64 and len(d["split_fit"]) == 2
        assert math.isfinite(summary["random_network_dimension"][name])
        assert 0 <= summary["cka_trained_vs_random"][name] <= 1
    for grid in (summary["conv_window_dimension"], summary["random_conv_window_dimension"]):
        assert len(grid) == 3 and all(len(row) == 4 for row in grid)
        assert all(0.5 < d < 64 for row in grid for d in row), grid
    cka = summary["cka"]
    for i in range(len(cka)):
        assert abs(cka[i][i] - 1) < 1e-9
        for j in range(len(cka)):
            assert cka[i][j] == cka[j][i] and -1e-9 <= cka[i][j] <= 1 + 1e-9
    # neighbouring layers are more alike than the board and the value head
    assert cka[1][2] > cka[0][4]
    assert json.loads((tmp_path / "representation_geometry.json").read_text()) == summary
    assert (tmp_path / "representation_geometry.png").stat().st_size > 1000
