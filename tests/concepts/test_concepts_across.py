"""probe_across on a planted concept: it appears in one known layer from one known checkpoint
on, and nowhere in the random network; scores checked against a slow ridge in the test."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from tdhook_rl.concepts.across import ConceptTable, checkpoint_modules, probe_across
from tdhook_rl.latent.splits import episode_split

D, N = 12, 1200


class Planted(nn.Module):
    """``a = A x``, ``b = [B x, g * (s . x)^2]``, ``c = C a``: the square of ``s . x`` is in
    ``b`` only where the gain ``g`` is non-zero; ``a`` and ``c`` are linear in ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(D, 8), nn.Linear(D, 8), nn.Linear(8, 8)
        self.s = nn.Linear(D, 1, bias=False)
        self.g = nn.Linear(1, 1, bias=False)
        self.b_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        b = self.b_out(torch.cat([self.b(x), self.g(self.s(x) ** 2)], -1))
        return self.c(a) + b[..., :8]


SITES = {"a": "module.a", "b": "module.b_out", "c": "module.c"}


def _checkpoints(w: torch.Tensor) -> dict[int, TensorDictModule]:
    torch.manual_seed(0)
    net = TensorDictModule(Planted(), ["observation"], ["out"])
    out = {}
    for step in (0, 100, 200, 300):
        state = {k: v.clone() for k, v in net.state_dict().items()}
        state["module.s.weight"] = w[None].clone()
        state["module.g.weight"] = torch.tensor([[1.0 if step >= 200 else 0.0]])
        out[step] = state
    return checkpoint_modules(net, out)


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(D, generator=g) / D**0.5
    done = (torch.arange(N) % 40 == 39).unsqueeze(-1)  # 30 episodes of 40 steps
    td = TensorDict({"observation": x, ("next", "done"): done}, [N])
    proj = x @ w
    return td, w, {"square": proj**2, "big": proj.abs() > 0.8}


@pytest.fixture(scope="module")
def table() -> ConceptTable:
    td, w, concepts = _data()
    return probe_across(_checkpoints(w), td, SITES, concepts, seed=0)


def test_planted_concept_where_and_when(table):
    assert table.steps == [0, 100, 200, 300] and table.sites == ["a", "b", "c"]
    for concept in ("square", "big"):
        score = table.grid(concept, "score")
        sel = table.grid(concept, "selectivity")
        assert torch.isfinite(sel).all()
        present = torch.zeros_like(score, dtype=torch.bool)
        present[1, 2:] = True  # layer b, from step 200 on
        high = 0.95 if concept == "square" else 0.9
        assert (score[present] > high).all(), score
        floor = 0.2 if concept == "square" else 0.7  # R^2 / balanced accuracy (chance 0.5)
        assert (score[~present] < floor).all(), score
        gain = 0.8 if concept == "square" else 0.4  # balanced accuracy gains at most 0.5
        assert (sel[present] > gain).all() and (sel[~present].abs() < 0.2).all(), sel
    rows = [r for r in table.rows if r["concept"] == "big"]
    assert {r["metric"] for r in rows} == {"balanced_accuracy"}
    assert {r["kind"] for r in table.rows if r["concept"] == "square"} == {"ridge"}


def test_scores_match_a_slow_ridge(table):
    """R^2 of layer b at step 200: ridge (alpha = 1 on standardized features) by hand."""
    td, w, concepts = _data()
    net = _checkpoints(w)[200]
    with torch.no_grad():
        x = td["observation"]
        feats = torch.cat([net.module.b(x), (x @ w)[:, None] ** 2], -1).double()
    y = concepts["square"].double()
    train, test = episode_split(td, 0.25, 0)
    xtr, ytr = feats[train], y[train]
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
    z = (xtr - mean) / std
    n = z.shape[0]
    beta = torch.linalg.solve(z.T @ z / n + torch.eye(z.shape[1]) / n, z.T @ (ytr - ytr.mean()) / n)
    pred = ((feats[test] - mean) / std) @ beta + ytr.mean()
    r2 = 1 - ((y[test] - pred) ** 2).sum() / ((y[test] - y[test].mean()) ** 2).sum()
    got = [r for r in table.rows if (r["concept"], r["site"], r["step"]) == ("square", "b", 200)]
    assert got[0]["score"] == pytest.approx(float(r2), abs=1e-6)


def test_constant_and_rare_concepts_are_said_not_scored():
    td, w, _ = _data()
    ckpt = {0: _checkpoints(w)[0]}
    rare = torch.zeros(N, dtype=torch.bool)
    rare[:3] = True
    table = probe_across(
        ckpt, td, {"a": "module.a"}, {"flat": torch.ones(N), "rare": rare}, control=None
    )
    notes = {r["concept"]: r["note"] for r in table.rows}
    assert notes["flat"].startswith("constant on the data")
    assert "too few samples per class" in notes["rare"]
    assert all(r["score"] is None for r in table.rows)


def test_unknown_future_steps_are_left_out():
    td, w, concepts = _data()
    future = concepts["square"].clone()
    future[-200:] = float("nan")  # censored: the last 5 episodes
    table = probe_across(
        {200: _checkpoints(w)[200]}, td, {"b": "module.b_out"}, {"future": future}, control=None
    )
    row = table.rows[0]
    assert row["score"] > 0.95 and row["n_train"] + row["n_test"] == N - 200


def test_bad_input():
    td, _, concepts = _data()
    net = TensorDictModule(Planted(), ["observation"], ["out"])
    wrong = {"weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="checkpoint 7 does not match the network"):
        checkpoint_modules(net, {7: wrong})
    with pytest.raises(ValueError, match="shaped like the data's batch"):
        probe_across({0: net}, td, SITES, {"x": torch.zeros(5)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        probe_across({}, td, SITES, concepts)


def test_plots(tmp_path, table):
    from tdhook_rl.concepts.across_plots import (
        plot_concept_map,
        plot_concepts_across,
        plot_dimension_boxes,
        plot_square_map,
    )

    plot_concepts_across(table, path=tmp_path / "across.png")
    plot_concept_map(table, path=tmp_path / "map.png")
    plot_dimension_boxes(
        {"a": torch.rand(5), "b": torch.rand(5)},
        control={"a": torch.rand(5), "b": torch.rand(5)},
        path=tmp_path / "boxes.png",
    )
    plot_square_map(torch.rand(8, 8), path=tmp_path / "squares.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "across.png",
        "boxes.png",
        "map.png",
        "squares.png",
    ]
    text = str(table)
    assert "selectivity" in text.splitlines()[0]


@pytest.mark.parametrize("n", [30, 200])  # fewer and more samples than units
def test_principal_components_match_an_svd(n):
    from tdhook_rl.concepts.across import _pca

    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 50, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, 50)
    u, s, _ = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    ref = u[:, :5] * s[:5]
    got = _pca(x, 5)
    signs = torch.sign((got * ref).sum(0))
    assert torch.allclose(got * signs, ref, atol=1e-8)
    td, w, concepts = _data()
    table = probe_across(
        {200: _checkpoints(w)[200]},
        td,
        {"b": "module.b_out"},
        {"square": concepts["square"]},
        control=None,
        max_features=4,
    )
    # the planted square has the largest variance of layer b: the first 4 components keep it
    assert table.rows[0]["score"] > 0.95
    with pytest.raises(ValueError, match="max_features"):
        probe_across({0: _checkpoints(w)[0]}, td, SITES, concepts, max_features=0)


def test_training_keeps_checkpoints_that_load(tmp_path):
    from tdhook_rl.agents.connect_four.model import DEFAULT_CONFIG, make_agent
    from tdhook_rl.agents.connect_four.train import train

    torch.manual_seed(0)
    train(iterations=2, envs=8, horizon=4, eval_every=0, save_every=1, out=tmp_path)
    paths = sorted((tmp_path / "checkpoints").glob("round_*.pt"))
    assert [p.name for p in paths] == ["round_0000.pt", "round_0001.pt", "round_0002.pt"]
    mods = checkpoint_modules(make_agent(DEFAULT_CONFIG), {int(p.stem[6:]): p for p in paths})
    first, last = (dict(mods[k].named_parameters()) for k in (0, 2))
    assert any(not torch.equal(first[n], last[n]) for n in first)  # training moved them
    with pytest.raises(ValueError, match="checkpoint 0 does not match"):
        checkpoint_modules(make_agent({**DEFAULT_CONFIG, "hidden": 7}), {0: paths[0]})
