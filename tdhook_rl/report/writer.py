"""``ReportWriter``: collects sections, figures, tables and numbers; publishes atomically."""

from __future__ import annotations

import base64
import html
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tdhook_rl.report.scalars import log_summary, require_logger

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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


class ReportWriter:
    """Builds a report in a temporary folder and moves it into place on :meth:`publish`.

    Args:
        out_dir: the final folder (replaced if it exists, only once the report is complete).
        title: the page title.
        logger: ``"csv"`` or ``"tensorboard"``: :meth:`publish` also logs the numbers'
            scalars through that TorchRL logger into ``out_dir/logs`` (see
            :mod:`tdhook_rl.report.scalars`); checked here, before any work is done.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "report"
        >>> report = ReportWriter(out, "demo")
        >>> report.section("Numbers", "Two numbers.")
        >>> report.table(["name", "value"], [["a", 1.0], ["b", 2.0]])
        >>> report.numbers["a"] = 1.0
        >>> path = report.publish()
        >>> sorted(p.name for p in path.iterdir())
        ['report.html', 'summary.json']
    """

    def __init__(self, out_dir: str | Path, title: str, *, logger: str | None = None) -> None:
        require_logger(logger)
        self.out_dir = Path(out_dir)
        self.title = title
        self.logger = None if logger == "none" else logger
        self.numbers: dict[str, Any] = {}
        self._parts: list[str] = []
        self._tmp = Path(tempfile.mkdtemp(prefix=".tdhook-rl-report-", dir=self._parent()))

    def _parent(self) -> Path:
        parent = self.out_dir.resolve().parent
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
        """Writes ``report.html`` and ``summary.json`` and moves the folder into place."""
        numbers = {**self.numbers, **(extra or {})}
        (self._tmp / "summary.json").write_text(json.dumps(numbers, indent=2, default=float) + "\n")
        page = PAGE.format(title=html.escape(self.title), body="\n".join(self._parts))
        (self._tmp / "report.html").write_text(page)
        if self.logger is not None:
            log_summary(numbers, self._tmp / "logs", self.logger)
        self._tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the report from a web server
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        self._tmp.rename(self.out_dir)
        return self.out_dir

    def discard(self) -> None:
        """Removes the unfinished report."""
        shutil.rmtree(self._tmp, ignore_errors=True)
