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
        ".tdhook-rl-report",
        "ablation_effects.png",
        "attribution_over_time.png",
        "deletion_curves.png",
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
    # one group per actor hidden layer, each ablated with every --ablation-value
    assert len(summary["ablations"]) >= 2
    # --ablation-steps 15 caps the paired episodes: at most 15 rewards of about 10
    assert all(0 < a["clean"] <= 15 * 10 for a in summary["ablations"])
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("report: ") and "transitions" in line
    worst = min(summary["ablations"], key=lambda r: r["change"])
    assert f"largest return change {worst['change']:+.0f} (ablating {worst['name']}" in line
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


def run_error(tmp_path, capsys, argv: list[str]) -> str:
    """Runs ``explain`` expecting a usage error: exit 2, one line, no report, no leftovers."""
    out = tmp_path / "report"
    assert main(["explain", "--out", str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tdhook-rl: error: "), err
    assert not out.exists() and not list(tmp_path.glob(".tdhook-rl-report-*"))
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--agent", "chess", "--steps", "10"],
            "--steps does not apply to --agent chess (only to double_pendulum)",
        ),
        (["--agent", "connect_four", "--no-probes"], "--probes does not apply"),
        (
            ["--fen", "8/8/8/8/8/8/8/8 w - - 0 1"],
            "--fen does not apply to --agent double_pendulum (only to chess)",
        ),
        (["--agent", "chess", "--games", "3"], "--games does not apply to --agent chess"),
        (["--agent", "chess", "--fen", "not a fen"], "--fen 'not a fen' is not a FEN"),
        (["--agent", "chess", "--fen", "8/8/8/8/8/8/8/8 w - - 0 1"], "no white king"),
        (["--agent", "chess", "--fen", "7k/5QQ1/8/8/8/8/8/K7 b - - 0 1"], "the game is over"),
        (["--agent", "chess", "--positions", "0"], "nothing to explain"),
        (["--agent", "chess", "--positions", "51"], "--positions must be in [0, 50]"),
        (["--agent", "connect_four", "--games", "0"], "--games must be >= 1"),
        (["--agent", "connect_four", "--positions", "0"], "--positions must be >= 1"),
        (["--agent", "connect_four", "--method", "lrp"], "unknown method 'lrp'"),
    ],
)
def test_options_of_other_agents_and_bad_values_are_refused(tmp_path, capsys, args, message):
    assert message in run_error(tmp_path, capsys, args)


CHESS_NET = "tdhook_rl.agents.chess.model:make_agent"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "tdhook_rl.agents.chess.model"], "--network expects module:callable"),
        (
            ["--network", "no_such_package_xyz.nets:build"],
            "cannot import 'no_such_package_xyz.nets' (No module named 'no_such_package_xyz')",
        ),
        (["--network", "tdhook_rl.cli:build_net"], "'tdhook_rl.cli' has no attribute 'build_net'"),
        (["--network", "tdhook_rl.cli:EXPLAINERS"], "'EXPLAINERS' is a dict, not a callable"),
        (["--network", CHESS_NET], "--network needs --checkpoint"),
        (
            ["--network", "tdhook_rl.report.common:top_entries", "--checkpoint", __file__],
            "calling it raised TypeError",
        ),
        (["--network", CHESS_NET, "--checkpoint", __file__], "cannot be read"),
    ],
)
def test_bad_network_one_line_exit_2_no_report(tmp_path, capsys, args, message):
    assert message in run_error(tmp_path, capsys, ["--agent", "chess", *args])


def test_network_that_does_not_match_the_checkpoint(tmp_path, capsys):
    from tdhook_rl.agents.connect_four.model import CHECKPOINT

    err = run_error(
        tmp_path,
        capsys,
        ["--agent", "chess", "--network", CHESS_NET, "--checkpoint", str(CHECKPOINT)],
    )
    assert "does not match the network built by --network" in err


def test_double_pendulum_network_from_an_import_path(tmp_path, capsys):
    """A shared-trunk actor-critic (``train.py --arch shared``), which the shipped loader
    refuses, explained through ``--network``."""
    from tdhook_rl.agents.double_pendulum import model

    shipped = torch.load(model.CHECKPOINT, weights_only=True)
    torch.manual_seed(0)
    avo = model.build_shared_actor_critic()
    checkpoint = tmp_path / "shared.pt"
    torch.save({"actor_critic": avo.state_dict(), "obs_norm": shipped["obs_norm"]}, checkpoint)
    network = "tdhook_rl.agents.double_pendulum.model:build_shared_actor_critic"
    out = tmp_path / "report"
    argv = ["explain", "--network", network, "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main([*argv, *SMALL, "--no-ablation"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transitions"] == 80 and "ablations" not in summary
    assert {r["site"] for r in summary["probes"]} == {"shared h1", "shared h2"}  # the trunk
    assert "report: " in capsys.readouterr().out


def test_tensorboard_missing_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import sys

    from tdhook_rl import cli

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not importable, even if installed

    def no_work(*args, **kwargs):
        raise AssertionError("the agent was loaded before the logger was checked")

    monkeypatch.setattr(cli, "_load_agent", no_work)
    for agent in ("double_pendulum", "chess"):
        err = run_error(tmp_path, capsys, ["--agent", agent, "--logger", "tensorboard"])
        assert err == (
            "tdhook-rl: error: --logger tensorboard needs the `tensorboard` package "
            "(pip install tensorboard)"
        )


def test_explain_help_lists_the_options_of_each_agent(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--network",
        "--logger",
        "--steps",
        "--no-probes",
        "--fen",
        "--positions",
        "--games",
        "--opponent",
    ):
        assert flag in text
    for group in ("double_pendulum options", "chess and connect_four options"):
        assert group in text
