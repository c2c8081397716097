"""examples/train_with_callback.py on a tiny budget: PPO trains, the callback evaluates, and
the training and interpretability scalars land in TorchRL's CSV files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tdhook_rl.envs.double_pendulum import FEATURE_NAMES
from tdhook_rl.report.double_pendulum import LABELS

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_with_callback.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_with_callback", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path):
    return [(int(s), float(v)) for s, v in (line.split(",") for line in path.read_text().split())]


def test_the_example_logs_training_and_interpretability_scalars(tmp_path, capsys):
    example = load_example()
    argv = ["--frames", "2048", "--every-frames", "1024", "--eval-steps", "40"]
    summary = example.main([*argv, "--log-dir", str(tmp_path)])
    scalars = tmp_path / "tdhook_rl" / "scalars"
    assert summary["scalars_dir"] == scalars and summary["evaluations"] == 1
    assert 0.0 < summary["overhead_fraction"] < 1.0
    expected = [
        "train/episode_return",
        "eval/return",
        "tdhook/eval_seconds",
        "tdhook/overhead_fraction",
        "intervention/actor_h2_half_ablated/return_change",
    ]
    expected += [f"attribution/{head}/{f}" for head in ("policy", "value") for f in FEATURE_NAMES]
    expected += ["attribution/policy/rounding_level", "attribution/value/rounding_level"]
    expected += [f"probe/actor_h{i}/{label}/r2" for i in (1, 2) for label in LABELS]
    for name in expected:
        rows = read_csv(scalars / f"{name}.csv")
        assert rows and rows[-1][0] == 2048, name
    shares = [read_csv(scalars / f"attribution/policy/{f}.csv")[0][1] for f in FEATURE_NAMES]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    # the policy head is the action distribution's location: a measurement, not rounding
    assert read_csv(scalars / "attribution/policy/rounding_level.csv") == [(2048, 0.0)]
    hparams = (tmp_path / "tdhook_rl" / "texts" / "hparams0.txt").read_text()
    assert "attribution/policy/target: ActionLoc('loc')" in hparams
    fraction = read_csv(scalars / "tdhook/overhead_fraction.csv")[0][1]
    assert 0.0 < fraction < 1.0
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == [
        "attribution_over_time_000002048.png",
        "feature_shares_000002048.png",
        "probe_r2_000002048.png",
    ]
    out = capsys.readouterr().out
    assert str(scalars) in out and str(tmp_path / "figures") in out


def test_a_missing_logger_backend_exits_with_the_one_line_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not importable, even if installed
    example = load_example()
    with pytest.raises(
        SystemExit, match="needs the `tensorboard` package: pip install tensorboard"
    ):
        example.main(["--logger", "tensorboard", "--log-dir", str(tmp_path)])


def test_the_example_keeps_checkpoints_and_maps_concepts_across_them(tmp_path):
    import torch

    example = load_example()
    argv = ["--frames", "2048", "--every-frames", "1024", "--eval-steps", "40"]
    example.main([*argv, "--log-dir", str(tmp_path), "--checkpoint-every", "1024"])
    files = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert files, "no checkpoint was kept"
    for name in files:  # each file holds the frame count its name gives
        saved = torch.load(tmp_path / "checkpoints" / name, weights_only=False)
        assert saved["frames"] == int(name.removeprefix("frames_").removesuffix(".pt"))
    assert (tmp_path / "figures" / "concepts_across.png").stat().st_size > 0
    selectivities = list((tmp_path / "tdhook_rl" / "scalars" / "concepts").rglob("*.csv"))
    assert selectivities
