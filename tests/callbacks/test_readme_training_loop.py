"""The README's "In a training loop" example runs as written, on the shipped agent, with only
its sizes made small (each replaced string must still be in the README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdhook_rl.envs.double_pendulum import FEATURE_NAMES

README = Path(__file__).parents[2] / "README.md"
SMALL = {
    "frames_per_batch=1_000, total_frames=200_000": "frames_per_batch=100, total_frames=200",
    # max_overhead=None: this loop trains nothing, so the 25% bound would defer evaluations
    "Schedule(every_frames=50_000)": "Schedule(every_frames=100, eval_steps=30, max_overhead=None)",
}


def loop_example() -> str:
    section = README.read_text().split("### In a training loop\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_training_loop_runs_on_the_shipped_agent(tmp_path, monkeypatch):
    code = loop_example()
    for big, small in SMALL.items():
        assert big in code, f"the README's loop example no longer says {big!r}"
        code = code.replace(big, small)
    monkeypatch.chdir(tmp_path)  # LogTo("csv") writes under ./tdhook_rl_logs
    namespace: dict = {}
    exec(compile(code, f"{README} (In a training loop)", "exec"), namespace)
    callback = namespace["callback"]
    assert namespace["frames"] == 200
    assert [int(h["frames"]) for h in callback.history] == [100, 200]
    scalars = callback.history[-1]
    for head in ("policy", "value"):
        assert scalars[f"attribution/{head}/rounding_level"] == 0.0
        shares = [scalars[f"attribution/{head}/{f}"] for f in FEATURE_NAMES]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert "probe/actor_h1/tip_height/r2" in scalars
    logged = tmp_path / "tdhook_rl_logs" / "tdhook_rl" / "scalars" / "eval" / "return.csv"
    assert [line.split(",")[0] for line in logged.read_text().split()] == ["100", "200"]
