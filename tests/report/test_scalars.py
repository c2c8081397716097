"""The summary's scalars: which numbers become logged series, and the logger check."""

from __future__ import annotations

import sys

import pytest

from tdhook_rl.report import ReportWriter
from tdhook_rl.report.scalars import log_summary, require_logger, summary_scalars


def test_nested_numbers_and_series():
    summary = {
        "agent": "chess",
        "n": 3,
        "delta": {"move": 0.5, "value": -0.25},
        "positions": [
            {"p_win": 0.1, "top": [{"square": "e4", "attribution": 1.0}], "map": [[1.0]]},
            {"p_win": 0.7, "delta": {"move": 2.0}, "agrees": True},
        ],
    }
    assert list(summary_scalars(summary)) == [
        ("n", 3.0, 0),
        ("delta/move", 0.5, 0),
        ("delta/value", -0.25, 0),
        ("positions/p_win", 0.1, 0),
        ("positions/p_win", 0.7, 1),
        ("positions/delta/move", 2.0, 1),
    ]


def test_csv_log_holds_every_scalar(tmp_path):
    summary = {"a": 1.0, "runs": [{"r": 2.0}, {"r": 3.0}]}
    folder = log_summary(summary, tmp_path / "logs", "csv")
    assert (folder / "scalars" / "a.csv").read_text() == "0,1.0\n"
    assert (folder / "scalars" / "runs" / "r.csv").read_text() == "0,2.0\n1,3.0\n"


def test_logger_checks(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown logger 'wandb'"):
        require_logger("wandb")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"needs the `tensorboard` package \(pip install"):
        ReportWriter(tmp_path / "report", "t", logger="tensorboard")
    assert list(tmp_path.iterdir()) == []  # refused before the staging folder exists
