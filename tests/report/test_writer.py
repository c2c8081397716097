"""``ReportWriter`` never removes a file it did not write: it replaces only a previous report
(recognized by its marker), only that report's files, and refuses anything else up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdhook_rl.report.writer import MARKER, ReportWriter, check_out_dir, read_marker


def staging(folder: Path) -> list[Path]:
    return list(folder.glob(".tdhook-rl-report-*"))


def publish(out: str | Path, title: str = "t", figures: tuple[str, ...] = (), **kw) -> Path:
    report = ReportWriter(out, title, **kw)
    for name in figures:  # a file a report writes beside report.html, as figure() does
        (report._tmp / f"{name}.png").write_bytes(b"png")
    report.numbers["x"] = 1.0
    return report.publish()


def user_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"notes.txt": "my notes", "data.csv": "1,2,3"}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def test_a_new_folder_gets_the_report_and_its_marker(tmp_path):
    out = publish(tmp_path / "a" / "report", "demo", figures=("fig",))
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER,
        "fig.png",
        "report.html",
        "summary.json",
    ]
    marker = json.loads((out / MARKER).read_text())
    assert marker["title"] == "demo" and marker["version"]
    assert marker["files"] == ["fig.png", "report.html", "summary.json"]
    assert not staging(tmp_path / "a")


def test_a_folder_of_other_files_is_refused_before_anything_is_written(tmp_path):
    files = user_files(tmp_path / "mine")
    with pytest.raises(FileExistsError, match=r"holds files that are not a tdhook-rl report"):
        ReportWriter(tmp_path / "mine", "t")
    assert {p.name: p.read_text() for p in (tmp_path / "mine").iterdir()} == files
    assert not staging(tmp_path) and not staging(tmp_path / "mine")


def test_a_file_is_refused(tmp_path):
    target = tmp_path / "existing.txt"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        ReportWriter(target, "t")
    with pytest.raises(NotADirectoryError, match="is a file, so"):
        check_out_dir(target / "report")
    assert target.read_text() == "keep me" and not staging(tmp_path)


def test_the_current_folder_with_files_is_refused(tmp_path, monkeypatch):
    files = user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError):
        ReportWriter(".", "t")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == files


def test_an_empty_folder_and_an_empty_current_folder_receive_the_report(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    out = publish(tmp_path / "empty")
    assert (out / "report.html").is_file() and read_marker(out) is not None
    assert not staging(out) and not staging(tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    publish(".")
    assert sorted(p.name for p in here.iterdir()) == [MARKER, "report.html", "summary.json"]


def test_a_previous_report_is_replaced_and_files_added_to_it_survive(tmp_path):
    out = publish(tmp_path / "report", "first", figures=("old_figure", "kept"))
    (out / "my_notes.txt").write_text("added by the user")
    publish(out, "second", figures=("kept",))
    names = sorted(p.name for p in out.iterdir())
    assert names == [MARKER, "kept.png", "my_notes.txt", "report.html", "summary.json"]
    assert (out / "my_notes.txt").read_text() == "added by the user"
    assert read_marker(out)["title"] == "second"
    assert "old_figure.png" not in read_marker(out)["files"]
    assert not staging(out) and not staging(tmp_path)


def test_logs_of_a_previous_report_go_but_a_users_file_among_them_stays(tmp_path):
    out = publish(tmp_path / "report", logger="csv")
    assert any(f.startswith("logs/") for f in read_marker(out)["files"])
    (out / "logs" / "mine.txt").write_text("mine")
    publish(out)
    assert [p.relative_to(out).as_posix() for p in (out / "logs").rglob("*")] == ["logs/mine.txt"]
    published = publish(tmp_path / "report2", logger="csv")
    publish(published)  # no logger this time: the logs folder, left empty, goes too
    assert not (published / "logs").exists()


def test_a_marker_never_leads_outside_the_report(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("outside")
    out = tmp_path / "report"
    out.mkdir()
    forged = {"files": ["../victim.txt", str(victim), "", 3], "folders": [".", ".."], "title": "x"}
    (out / MARKER).write_text(json.dumps(forged))
    publish(out)
    assert victim.read_text() == "outside"


def test_a_file_the_previous_report_did_not_write_is_never_overwritten(tmp_path):
    out = publish(tmp_path / "report")
    (out / "figure.png").write_text("the user's figure")
    with pytest.raises(FileExistsError, match="was not written by a previous report"):
        publish(out, figures=("figure",))
    assert (out / "figure.png").read_text() == "the user's figure"
    assert read_marker(out)["files"] == ["report.html", "summary.json"]


def test_a_folder_filled_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "report"
    report = ReportWriter(out, "t")
    files = user_files(out)  # someone writes there while the job runs
    with pytest.raises(FileExistsError):
        report.publish()
    report.discard()
    assert {p.name: p.read_text() for p in out.iterdir()} == files
    assert not staging(tmp_path)
