"""``ReportWriter``: collects sections, figures, tables and numbers; publishes atomically.

A published report holds a marker file, :data:`MARKER` (JSON: the package version, the title
and the list of files the report wrote). The writer replaces only such a report, and removes
only the files its marker lists: it refuses a path that is a file and a non-empty folder
without the marker (:func:`check_out_dir`), before any work is done.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tdhook_rl import __version__
from tdhook_rl.report.scalars import log_summary, require_logger

__all__ = ["MARKER", "ReportWriter", "check_out_dir", "read_marker"]

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; }}
table {{ border-collapse: collapse; margin: .8em 0; font-size: .92em; }}
th, td {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right;
          overflow-wrap: anywhere; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: .9em; }} .meta {{ color: #555; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
<script>
// marks how many figures decoded, for people and for the headless-browser test
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script>
</body></html>
"""


#: the marker file of a published report: JSON with ``version``, ``title`` and ``files``
MARKER = ".tdhook-rl-report"
_STAGING = ".tdhook-rl-report-"  # prefix of the staging folder, removed by publish/discard


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of the report published in ``folder``; ``None`` if it holds none."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), list):
        return None
    return marker


def check_out_dir(out_dir: str | Path) -> Path:
    """Checks that a report can be published at ``out_dir``; creates nothing.

    Accepted: a path that does not exist (its parent folders are made), an empty folder, and
    a previous report (a folder holding :data:`MARKER`), which is replaced.

    Raises:
        NotADirectoryError: ``out_dir``, or a folder above it, is a file.
        FileExistsError: ``out_dir`` is a folder holding files and no report.
        PermissionError: the folder that would receive the report is not writable.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> check_out_dir(folder / "report").name
        'report'
        >>> check_out_dir(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileExistsError: ... holds files that are not a tdhook-rl report (notes.txt); ...
    """
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"{path} is a file, not a folder; name a folder for the report "
            "(a new one, an empty one or a previous report, which is replaced)"
        )
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if not p.name.startswith(_STAGING))
        if others and read_marker(path) is None:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise FileExistsError(
                f"{path} holds files that are not a tdhook-rl report ({shown}); name a new "
                f"or empty folder (a previous report, which holds {MARKER}, is replaced)"
            )
        writable = path
    else:
        writable = next(p for p in path.absolute().parents if p.exists())
        if not writable.is_dir():
            raise NotADirectoryError(f"{writable} is a file, so {path} cannot be made")
    if not os.access(writable, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the report {path}: {writable} is not writable")
    return path


def _relative(name: Any) -> bool:
    # a marker's entry names a file inside the report, never one above it
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        return False
    parts = Path(name).parts
    return bool(parts) and ".." not in parts


class ReportWriter:
    """Builds a report in a staging folder and moves it into place on :meth:`publish`.

    Args:
        out_dir: the report folder: a new path, an empty folder, or a previous report (only
            the files it wrote are replaced, once the new report is complete). Anything else
            is refused here (see :func:`check_out_dir`), before any work is done.
        title: the page title.
        logger: ``"csv"`` or ``"tensorboard"``: :meth:`publish` also logs the numbers'
            scalars through that TorchRL logger into ``out_dir/logs`` (see
            :mod:`tdhook_rl.report.scalars`); checked here, before any work is done.

    Raises:
        NotADirectoryError, FileExistsError, PermissionError: see :func:`check_out_dir`.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "report"
        >>> report = ReportWriter(out, "demo")
        >>> report.section("Numbers", "Two numbers.")
        >>> report.table(["name", "value"], [["a", 1.0], ["b", 2.0]])
        >>> report.numbers["a"] = 1.0
        >>> path = report.publish()
        >>> sorted(p.name for p in path.iterdir())
        ['.tdhook-rl-report', 'report.html', 'summary.json']
        >>> read_marker(path)["files"]
        ['report.html', 'summary.json']
    """

    def __init__(self, out_dir: str | Path, title: str, *, logger: str | None = None) -> None:
        self.out_dir = check_out_dir(out_dir)
        require_logger(logger)
        self.title = title
        self.logger = None if logger == "none" else logger
        self.numbers: dict[str, Any] = {}
        self._parts: list[str] = []
        self._tmp = Path(tempfile.mkdtemp(prefix=_STAGING, dir=self._staging_parent()))

    def _staging_parent(self) -> Path:
        # inside an existing folder (its files then move within it, which works for "." too),
        # else beside the folder to be made
        if self.out_dir.is_dir():
            return self.out_dir
        parent = self.out_dir.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def section(self, heading: str, text: str = "") -> None:
        """Starts a section with a heading and an optional paragraph."""
        self._parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            self._parts.append(f"<p>{html.escape(text)}</p>")

    def paragraph(self, text: str, css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def figure(self, fig: Any, name: str, caption: str) -> Path:
        """Saves a matplotlib figure as ``name.png`` and embeds it (base64) in the page."""
        path = self._tmp / f"{name}.png"
        fig.savefig(path)
        import matplotlib.pyplot as plt

        plt.close(fig)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self._parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({path.name})</figcaption></figure>"
        )
        return path

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
        self._parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def publish(self, extra: Mapping[str, Any] | None = None) -> Path:
        """Writes ``report.html``, ``summary.json`` and the marker, and moves the report into
        place: a new folder is renamed into place at once; into an existing one (empty, or a
        previous report) the previous report's files are removed and the new ones moved in.

        Raises:
            FileExistsError: the folder changed during the run and now holds files that are
                no report's, or one the new report would overwrite (nothing is removed).
        """
        numbers = {**self.numbers, **(extra or {})}
        (self._tmp / "summary.json").write_text(json.dumps(numbers, indent=2, default=float) + "\n")
        page = PAGE.format(title=html.escape(self.title), body="\n".join(self._parts))
        (self._tmp / "report.html").write_text(page)
        if self.logger is not None:
            log_summary(numbers, self._tmp / "logs", self.logger)
        written = sorted(self._tmp.rglob("*"))
        marker = {
            "version": __version__,
            "title": self.title,
            "files": [p.relative_to(self._tmp).as_posix() for p in written if p.is_file()],
            "folders": [p.relative_to(self._tmp).as_posix() for p in written if p.is_dir()],
        }
        (self._tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        self._tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the report from a web server
        if self.out_dir.exists():
            self._replace(marker)
        else:
            self._tmp.rename(self.out_dir)
        return self.out_dir

    def _replace(self, marker: dict[str, Any]) -> None:
        check_out_dir(self.out_dir)  # again: the folder may have changed during the run
        out, files = self.out_dir, marker["files"]
        old = read_marker(out) or {"files": []}
        previous = [f for f in old["files"] if _relative(f)]
        old_folders = [f for f in old.get("folders", []) if _relative(f)]
        for name in files:
            taken = [out / name, *(p for p in (out / name).parents if out in p.parents)]
            if name not in previous and any(p.exists() and not p.is_dir() for p in taken):
                raise FileExistsError(
                    f"{out / name} exists and was not written by a previous report; "
                    "the new report was not published (move that file away and run again)"
                )
        # the marker first, listing both reports' files: an interrupted move leaves a folder
        # that the next run recognizes as a report and replaces
        both = {
            **marker,
            "files": sorted({*files, *previous}),
            "folders": sorted({*marker["folders"], *old_folders}),
        }
        (out / MARKER).write_text(json.dumps(both, indent=2) + "\n")
        for name in sorted(set(previous) - set(files)):
            if (out / name).is_file() or (out / name).is_symlink():
                (out / name).unlink()
        gone = {f for f in previous if f not in files} | set(old_folders)
        folders = {p.as_posix() for f in gone for p in Path(f).parents if p != Path(".")}
        for name in sorted(folders | set(old_folders), key=len, reverse=True):
            folder = out / name  # a folder of the previous report, left empty: removed
            if name not in marker["folders"] and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        for name in marker["folders"]:
            (out / name).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(self._tmp / name, out / name)
        os.replace(self._tmp / MARKER, out / MARKER)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def discard(self) -> None:
        """Removes the unfinished report (its staging folder)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
