"""examples/attribute_double_pendulum.py and examples/probe_from_memmap.py on small budgets:
each runs the shipped agent and writes what its docstring says it writes; the memmap example
stores under the folder it is given and removes what it wrote unless ``--keep``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tdhook_rl.envs.double_pendulum import FEATURE_NAMES
from tdhook_rl.report.double_pendulum import LABELS

EXAMPLES = Path(__file__).parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attribution_example_explains_the_shipped_agent(tmp_path, monkeypatch):
    example = load_example("attribute_double_pendulum")
    loaded = []
    real_load = example.agents.load
    monkeypatch.setattr(example.agents, "load", lambda name: loaded.append(name) or real_load(name))
    out = tmp_path / "results"
    summary = example.main(["--steps", "30", "--n-steps", "4", "--out", str(out)])
    assert loaded == ["double_pendulum"]  # the shipped agent, not a random network
    assert summary["steps"] == 30 and summary["episode_ends"] == 0  # the trained agent balances
    assert summary["mean_reward_per_step"] > 9.0
    assert sorted(p.name for p in out.iterdir()) == ["attribution.json", "feature_shares.png"]
    assert json.loads((out / "attribution.json").read_text()) == summary
    for head in ("policy", "value"):
        assert list(summary["shares"][head]) == list(FEATURE_NAMES)
        assert sum(summary["shares"][head].values()) == pytest.approx(1.0, abs=1e-5)
        assert summary[f"{head}_mean_abs_attribution"] > 0
    assert (out / "feature_shares.png").stat().st_size > 0


@pytest.mark.parametrize("keep", [False, True])
def test_memmap_example_writes_results_and_cleans_its_storage(tmp_path, keep):
    example = load_example("probe_from_memmap")
    storage, out = tmp_path / "storage", tmp_path / "out"
    storage.mkdir()
    (storage / "unrelated.txt").write_text("not the example's")
    argv = ["--transitions", "800", "--envs", "4", "--batch-size", "300"]
    summary = example.main(
        [*argv, "--storage", str(storage), "--out", str(out)] + ["--keep"] * keep
    )
    assert summary["transitions"] == 800 and summary["disk_mb"] > 0
    assert Path(summary["storage"]).parent == storage  # under the folder it was given
    assert (storage / "unrelated.txt").read_text() == "not the example's"
    leftovers = [p.name for p in storage.iterdir() if p.name != "unrelated.txt"]
    assert leftovers == ([Path(summary["storage"]).name] if keep else [])
    rows = json.loads((out / "probe_r2.json").read_text())
    assert {r["label"] for r in rows} == set(LABELS) and {r["site"] for r in rows} == {
        "actor h1",
        "actor h2",
    }
    assert json.loads((out / "memmap_run.json").read_text()) == summary


def test_memmap_example_defaults_are_reasonable():
    """The default budget runs in well under a minute (20,000 transitions, measured about 24 s
    in all; it was a million, 618 MB left in a temp folder), and cleans up."""
    defaults = load_example("probe_from_memmap").make_parser().parse_args([])
    assert defaults.transitions == 20_000 and defaults.storage is None and not defaults.keep
