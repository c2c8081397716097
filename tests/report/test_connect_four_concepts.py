"""The concepts-across-training section of the Connect Four report, on the shipped
checkpoints of the short training run: the checkpoints load as float32 agents, the section's
table is probe_across run directly (modules built by checkpoint_modules, positions by
concept_positions, which the example uses too), and the option adds the map and the summary
entry or nothing."""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl.agents.connect_four import make_agent
from tdhook_rl.agents.connect_four.model import load
from tdhook_rl.agents.connect_four.training_run import (
    compact,
    load_round,
    training_checkpoints,
)
from tdhook_rl.concepts.across import checkpoint_modules, probe_across
from tdhook_rl.concepts.labels import connect_four_concepts
from tdhook_rl.report import connect_four as c4_report
from tdhook_rl.report.connect_four import explain_connect_four
from tdhook_rl.report.connect_four_concepts import (
    CKA_SITE,
    SITES,
    concept_positions,
    concepts_section,
)
from tdhook_rl.report.options import ConnectFourOptions
from tdhook_rl.report.writer import ReportWriter

EXAMPLE = Path(__file__).parents[2] / "examples" / "concepts_across_training.py"
SMALL = {"games": 24, "plies": 12, "seed": 3}
ROUNDS = [0, 10, 20, 30, 40]


def _example():
    spec = importlib.util.spec_from_file_location("concepts_across_training_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_checkpoints_are_small_float16_and_load_as_float32_agents():
    paths = training_checkpoints()
    assert list(paths) == ROUNDS
    assert sum(p.stat().st_size for p in paths.values()) < 4e6
    reference = make_agent().state_dict()
    for step, path in paths.items():
        saved = torch.load(path, weights_only=True)
        assert saved["meta"]["rounds"] == step
        assert {v.dtype for v in saved["state_dict"].values() if v.is_floating_point()} == {
            torch.float16
        }
        agent = load_round(step)
        state = agent.state_dict()
        assert state.keys() == reference.keys()
        for k, v in state.items():
            assert v.shape == reference[k].shape, k
            if v.is_floating_point():
                assert v.dtype == torch.float32, k
                assert torch.equal(v, saved["state_dict"][k].float()), k
    # training changed the weights between checkpoints
    first, last = load_round(0).state_dict(), load_round(40).state_dict()
    assert not torch.equal(
        first["module.0.module.conv.weight"], last["module.0.module.conv.weight"]
    )


def test_compact_halves_a_checkpoint_and_keeps_it_loadable(tmp_path):
    source = tmp_path / "full"
    source.mkdir()
    agent = make_agent()
    torch.save(
        {"config": {}, "state_dict": agent.state_dict(), "meta": {"rounds": 7}},
        source / "round_0007.pt",
    )
    out = compact(source, tmp_path / "small")
    assert list(out) == [7]
    assert out[7].stat().st_size < 0.6 * (source / "round_0007.pt").stat().st_size
    restored = load_round(7, folder=tmp_path / "small").state_dict()
    for k, v in agent.state_dict().items():
        torch.testing.assert_close(restored[k], v, atol=1e-3, rtol=1e-3)


def test_bad_folder_and_round_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no round_"):
        training_checkpoints(tmp_path)
    with pytest.raises(KeyError, match="no checkpoint of round 5"):
        load_round(5)


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    report = ReportWriter(tmp_path_factory.mktemp("concepts") / "report", "t")
    summary: dict = {}
    try:
        table = concepts_section(report, summary, **SMALL)
    finally:
        report.discard()
    return table, summary


def test_section_table_is_probe_across_on_the_same_checkpoints_and_positions(section):
    table, summary = section
    example = _example()
    assert SITES == example.SITES
    modules = checkpoint_modules(make_agent(), training_checkpoints())
    data = concept_positions(modules[40], explore=0.3, **SMALL)
    stone = 1 - 2 * data["player"].squeeze(-1).to(torch.int8)
    direct = probe_across(
        modules, data, SITES, connect_four_concepts(data["board"], stone), seed=SMALL["seed"]
    )
    assert len(table.rows) == len(direct.rows) == 5 * len(SITES) * len(ROUNDS)
    for mine, ref in zip(table.rows, direct.rows, strict=True):
        assert {k: mine[k] for k in ("concept", "site", "step", "metric", "note")} == {
            k: ref[k] for k in ("concept", "site", "step", "metric", "note")
        }
        for key in ("score", "control", "selectivity"):
            if ref[key] is None:
                assert mine[key] is None
            else:
                assert mine[key] == pytest.approx(ref[key], abs=1e-6), (mine, key)
    assert summary["concepts_across_training"]["rows"] == table.rows
    assert summary["concepts_across_training"]["n_positions"] == data.numel()


def test_selectivity_is_score_minus_random_network(section):
    table, _ = section
    scored = [r for r in table.rows if r["selectivity"] is not None]
    assert scored
    for r in scored:
        assert math.isclose(r["selectivity"], r["score"] - r["control"], abs_tol=1e-9)


def _explain(tmp_path, monkeypatch, concepts: bool):
    small = functools.partial(concepts_section, games=16, plies=10)
    monkeypatch.setattr(c4_report, "concepts_section", small)
    from tdhook_rl import agents

    opts = ConnectFourOptions(method="saliency", games=1, concepts=concepts)
    return explain_connect_four(agents.load("connect_four"), tmp_path / "r", opts, progress=False)


def test_report_with_concepts_writes_the_map_and_the_summary_entry(tmp_path, monkeypatch):
    path, summary = _explain(tmp_path, monkeypatch, True)
    assert (path / "concepts_across.png").stat().st_size > 10_000
    entry = summary["concepts_across_training"]
    assert len(entry["rows"]) == 5 * len(SITES) * len(ROUNDS)
    assert list(entry["checkpoints"]) == [str(r) for r in ROUNDS]
    html = (path / "report.html").read_text()
    assert "Connect Four concepts" in html and "random network" in html


def test_report_without_concepts_is_unchanged(tmp_path, monkeypatch):
    path, summary = _explain(tmp_path, monkeypatch, False)
    assert not (path / "concepts_across.png").exists()
    assert "concepts_across_training" not in summary
    assert "Connect Four concepts" not in (path / "report.html").read_text()


def test_checkpoint_cka_is_the_slow_hsic_formula(section):
    """Linear CKA from centred Gram matrices (Kornblith et al. 2019, eq. 2 with linear
    kernels), written out here, on the section's positions and layer."""
    _, summary = section
    entry = summary["checkpoint_cka"]
    assert entry["names"] == [f"round {r}" for r in ROUNDS] + ["shipped agent"]
    data = concept_positions(load_round(40), explore=0.3, **SMALL).reshape(-1)
    inputs = data.select("observation", "action_mask")

    def acts(module) -> torch.Tensor:
        recorded = thr.Recorded(module, {"h": CKA_SITE})
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            return recorded(inputs.clone())["activations", "h"].double()

    def cka(x, y):
        n = x.shape[0]
        h = torch.eye(n, dtype=x.dtype) - 1.0 / n
        k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
        return float((k * l_).sum() / ((k * k).sum() * (l_ * l_).sum()).sqrt())

    first, last, shipped = acts(load_round(0)), acts(load_round(40)), acts(load())
    matrix = entry["matrix"]
    assert matrix[0][4] == pytest.approx(cka(first, last), abs=1e-5)
    assert matrix[4][5] == pytest.approx(cka(last, shipped), abs=1e-5)
    assert matrix[2][2] == pytest.approx(1.0, abs=1e-6)
