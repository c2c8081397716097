"""The report opens in headless Chromium with every figure decoded and no console error."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_cli import SMALL

from tdhook_rl.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


CHESS = ["--agent", "chess", "--positions", "2", "--n-steps", "4", "--quiet"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize(
    ("argv", "figures"), [(SMALL, 5), (CHESS, 5)], ids=["double_pendulum", "chess"]
)
def test_report_loads_in_headless_chromium(tmp_path, argv, figures):
    if "chess" in argv:
        pytest.importorskip("chess", reason="python-chess is not installed (tdhook-rl[chess])")
    out = tmp_path / "report"
    assert main(["explain", "--out", str(out), *argv]) == 0
    run = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    body = re.search(r"<body[^>]*>", run.stdout).group(0)
    total = int(re.search(r'data-images-total="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    assert total == figures and loaded == total
    console_errors = [
        line
        for line in run.stderr.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line)
    ]
    assert not console_errors, console_errors
