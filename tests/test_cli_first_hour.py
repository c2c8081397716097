"""The command's first hour: ``--help`` and usage errors without torch, an ``--out`` that is
checked before any work and never loses a user's file, a clear word for a file that is no
checkpoint, no progress-bar escapes in a log, and one line on Ctrl-C or SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tdhook_rl import cli
from tdhook_rl.cli import EXPLAINERS, main
from tdhook_rl.report import options
from tdhook_rl.report.writer import MARKER

ROOT = Path(__file__).resolve().parents[1]
CHESS = ["--agent", "chess", "--positions", "1", "--method", "saliency"]


def python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, **kwargs
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["explain", "--help"],
        ["explain", "--steps", "0"],
        ["explain", "--method", "lrp"],
        ["explain", "--agent", "walker"],
        ["explain", "--agent", "chess", "--steps", "3"],
        ["explain", "--out", "README.md"],
    ],
)
def test_help_and_usage_errors_import_no_torch(argv):
    code = (
        "import sys\nfrom tdhook_rl.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, 'torch' in sys.modules, 'torchrl' in sys.modules)"
    )
    done = python(code, cwd=ROOT)
    assert done.stdout.split()[-3:] in (["0", "False", "False"], ["2", "False", "False"]), (
        done.stdout + done.stderr
    )


def test_help_has_no_rst_markup(capsys):
    for argv in (["--help"], ["explain", "--help"], ["agents", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    text = capsys.readouterr().out
    assert "`" not in text and ":class:" not in text and ":func:" not in text


def test_flags_come_from_the_options_dataclasses(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    out = capsys.readouterr().out
    text, squeezed = " ".join(out.split()), "".join(out.split())  # argparse wraps lines
    for agent, explainer in EXPLAINERS.items():
        for field in dataclasses.fields(explainer.options):
            assert options.flag(field.name) in text, (agent, field.name)
            help_text = options.option_help(explainer.options, field.name)
            assert "".join(help_text.split()) in squeezed, help_text
    assert (
        "--steps STEPS environment steps per copy in the attribution rollout (default: 1000)"
        in text
    )
    assert EXPLAINERS["connect_four"].specific == {
        "games": 2,
        "opponent": "random",
        "positions": 8,
        "concepts": False,
    }


def test_each_job_uses_the_declared_options():
    from tdhook_rl.attribution import METHODS
    from tdhook_rl.report import chess, connect_four, double_pendulum, scalars

    assert double_pendulum.ExplainOptions is options.ExplainOptions
    assert connect_four.ConnectFourOptions is options.ConnectFourOptions
    assert issubclass(chess.ChessOptions, options.ChessOptions)
    assert connect_four.OPPONENTS is options.OPPONENTS
    # the torch-free spelling of the registry: every name offered exists, every other is
    # left out on purpose
    assert set(options.METHODS) | set(options.NOT_OFFERED) == set(METHODS)
    assert not set(options.METHODS) & set(options.NOT_OFFERED)
    assert scalars.LOGGERS == ("none", *(n for n, b in scalars.LOGGER_BACKENDS.items() if b.local))


def test_the_main_install_has_what_agents_lists():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"chess\b", d) for d in project["dependencies"])
    assert project["optional-dependencies"]["chess"] == ["chess>=1.10"]  # the alias stays


def no_work(*args, **kwargs):
    raise AssertionError("the agent was loaded before --out was checked")


def refused(tmp_path, capsys, monkeypatch, out: str, message: str) -> str:
    monkeypatch.setattr(cli, "_load_agent", no_work)
    assert main(["explain", "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    return err


def test_out_folder_with_other_files_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    refused(tmp_path, capsys, monkeypatch, str(mine), "holds files that are not a tdhook-rl report")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_out_dot_in_a_folder_with_files_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    refused(tmp_path, capsys, monkeypatch, ".", "holds files that are not a tdhook-rl report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "sub"]


def test_out_naming_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_text("1,2")
    refused(tmp_path, capsys, monkeypatch, str(target), "is a file, not a folder")
    assert target.read_text() == "1,2"


def test_empty_folder_is_used_and_a_previous_report_replaced(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    assert main(["explain", "--out", str(out), "--quiet", *CHESS]) == 0
    first = json.loads((out / MARKER).read_text())["files"]
    assert {"report.html", "summary.json"} <= set(first)
    (out / "my_notes.txt").write_text("mine")
    assert main(["explain", "--out", str(out), "--quiet", *CHESS, "--logger", "csv"]) == 0
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "logs").is_dir()
    assert not list(tmp_path.glob(".tdhook-rl-report-*")) and not list(out.glob(".tdhook-rl-*-*"))


def test_progress_bars_write_nothing_into_a_log(tmp_path, capsys):
    """stderr is captured here, not a terminal: no bar, so no carriage returns or escapes."""
    assert main(["explain", "--out", str(tmp_path / "r"), *CHESS]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and "explain chess" not in err


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"\x80\x02garbage", b""])
def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, capsys, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert main(["explain", "--checkpoint", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "is not a torch checkpoint of the double_pendulum agent" in err
    assert "the entries config, actor, critic, obs_norm" in err


def test_a_torch_file_of_other_entries_says_what_it_holds(tmp_path, capsys):
    import torch

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    argv = ["explain", "--agent", "chess", "--checkpoint", str(other), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "not a torch checkpoint of the chess agent" in err and "it holds ['weights']" in err


@pytest.mark.parametrize(
    ("sig", "status", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_mid_run_leaves_no_staging_folder_and_one_line(tmp_path, sig, status, word):
    out = tmp_path / "report"
    argv = ["explain", "--out", str(out), "--quiet", "--steps", "100000", "--envs", "1"]
    argv += ["--no-probes", "--no-ablation", "--n-steps", "2"]
    code = f"import sys; from tdhook_rl.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob(".tdhook-rl-report-*")):  # the job has started
            assert proc.poll() is None and time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the rollout
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.strip() == f"tdhook-rl: {word}", err  # one line, no traceback
    assert not list(tmp_path.glob(".tdhook-rl-report-*")) and not out.exists()


def test_main_restores_the_sigterm_handler(capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["agents"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
