"""The ``tdhook-rl`` command: a reduced default run writes a complete report; bad input gives
one line, exit status 2 and no report."""

from __future__ import annotations

import json

import pytest
import torch

from tdhook_rl.cli import main

SMALL = [
    "--steps",
    "40",
    "--envs",
    "2",
    "--episodes",
    "2",
    "--groups",
    "1",
    "--ablation-steps",
    "15",
    "--n-steps",
    "4",
    "--quiet",
]


def test_explain_default_agent_on_a_reduced_budget(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["explain", "--out", str(out), *SMALL]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "ablation_effects.png",
        "attribution_over_time.png",
        "feature_shares.png",
        "probe_r2.png",
        "report.html",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transitions"] == 80
    for head in ("policy", "value"):
        shares = summary["attribution_share"][head]
        assert len(shares) == 9 and abs(sum(shares.values()) - 1) < 1e-5
        assert 0 <= summary[f"{head}_max_abs_completeness_delta"] < 1  # 4 IG steps only
    assert {r["label"] for r in summary["probes"]} >= {"hinge1_angle", "tip_height"}
    assert len(summary["ablations"]) == 2  # one group per actor hidden layer
    # --ablation-steps 15 caps the paired episodes: at most 15 rewards of about 10
    assert all(0 < a["clean"] <= 15 * 10 for a in summary["ablations"])
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("report: ") and "transitions" in line
    assert not list(tmp_path.glob(".tdhook-rl-report-*"))  # no leftovers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "walker"], "unknown agent 'walker'"),
        (["--method", "lrp"], "unknown method 'lrp'"),
        (["--n-steps", "1"], "--n-steps must be >= 2"),
        (["--checkpoint", "/nonexistent.pt"], "does not exist"),
    ],
)
def test_bad_input_one_line_exit_2_no_report(tmp_path, capsys, args, message):
    out = tmp_path / "report"
    assert main(["explain", "--out", str(out), *SMALL, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_checkpoint_that_does_not_match_the_network(tmp_path, capsys):
    from tdhook_rl.agents.double_pendulum import model

    state = torch.load(model.CHECKPOINT, weights_only=True)
    state["actor"] = {k: v[..., :3] for k, v in state["actor"].items()}  # wrong widths
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    out = tmp_path / "report"
    assert main(["explain", "--checkpoint", str(bad), "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match the double_pendulum network" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_every_subcommand_has_help(capsys):
    for argv in (["--help"], ["explain", "--help"], ["agents", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--agent" in capsys.readouterr().out
