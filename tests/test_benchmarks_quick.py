"""`python -m benchmarks run --quick` runs and writes valid output (correctness only: no
timing is asserted anywhere in the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_writes_results(tmp_path):
    out = tmp_path / "not" / "yet"  # created by the run
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--quick",
            "--threads",
            "1",
            "--output-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    text = (out / "RESULTS.md").read_text()
    names = {b["name"] for b in results["benchmarks"]}
    assert {
        "multi_target_ig",
        "ig_sweep",
        "in_rollout",
        "gpu_rollout",
        "ig_memory",
        "footprint",
    } <= names
    for bench in results["benchmarks"]:
        assert f"`{bench['name']}`" in text
        for case in bench["cases"]:
            for contestant in case["contestants"]:
                # footprint has no outputs to compare (agreement None)
                if contestant["status"] == "ok" and contestant["agreement"] is not None:
                    assert contestant["agreement"]["passed"], (bench["name"], contestant)
    footprint = next(b for b in results["benchmarks"] if b["name"] == "footprint")
    rows = {c["name"]: c for c in footprint["cases"][0]["contestants"]}
    assert rows["tdhook_rl"]["extras"]["own MiB"] > 0
    assert rows["tdhook_rl"]["extras"]["runtime deps MiB"] > rows["tdhook_rl"]["extras"]["own MiB"]

    # `render` rebuilds the same report from the raw numbers
    (out / "RESULTS.md").unlink()
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "render", str(out / "results.json")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    rendered = (out / "RESULTS.md").read_text()
    for bench in results["benchmarks"]:
        assert f"`{bench['name']}`" in rendered
    assert "paired / captum" in rendered


def test_unusable_output_dir_fails_before_any_timing(tmp_path, capsys):
    from benchmarks.__main__ import main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "--only", "in_rollout", "--output-dir", str(blocker / "sub")]) == 2
    assert "--output-dir" in capsys.readouterr().err
