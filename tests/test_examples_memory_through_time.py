"""examples/memory_through_time.py: a recurrent agent trained on a cue-recall task, attributed
through time. Only the step-0 cue tells the answer, so a policy that solves the task must base
its decision on it: the attribution of the decision has to rest on step 0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "memory_through_time.py"


def test_the_decision_rests_on_the_remembered_cue(tmp_path):
    spec = importlib.util.spec_from_file_location("memory_through_time", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--out", str(tmp_path)])
    assert summary["accuracy"] >= 0.95  # the agent solved the task: it remembers the cue
    by_step = summary["decision_attribution_by_step"]
    assert len(by_step) == example.STEPS
    assert max(range(len(by_step)), key=by_step.__getitem__) == 0
    assert summary["decision_share_of_step_0"] > 0.5
    # IG's path points are doubled until completeness holds on every trajectory and step: the
    # trained network's steepness depends on the CPU's floating-point path, the bound does not
    assert summary["converged"]
    assert summary["max_abs_completeness_delta"] <= summary["max_delta_bound"] == 0.05
    assert summary["ig_n_steps"] >= 256
    assert (tmp_path / "memory_map.png").stat().st_size > 0
    assert json.loads((tmp_path / "memory_through_time.json").read_text()) == summary
