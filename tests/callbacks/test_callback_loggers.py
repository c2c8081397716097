"""``logger=``: a TorchRL logger instance, a backend name built on first use, or ``None``; a
backend whose package is missing fails at construction with a one-line message."""

from __future__ import annotations

import sys

import pytest
from torchrl.record.loggers import CSVLogger

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import AttributionSpec, InterpretabilityCallback, LogTo, Schedule
from tdhook_rl.targets import ActionLogProb

from models import PointMassEnv, gaussian_actor


def make_callback(tmp_path, logger="csv"):
    return InterpretabilityCallback(
        PointMassEnv(),
        gaussian_actor(action_dim=1),
        AttributionSpec({"policy": ActionLogProb()}, method=Saliency(abs=False)),
        # exact firing frames: no time-based deferral
        schedule=Schedule(every_frames=1000, eval_steps=10, max_overhead=None),
        log=LogTo(logger, log_dir=tmp_path, figures_every=0),
    )


def read_csv(path):
    return [
        (int(step), float(value))
        for step, value in (line.split(",") for line in path.read_text().splitlines())
    ]


def test_csv_by_name_writes_every_scalar_at_its_step(tmp_path):
    callback = make_callback(tmp_path, logger="csv")
    assert not any(tmp_path.iterdir())  # the logger is built on first use, not before
    for frames in (500, 1000, 1500, 2000):
        callback(frames)
    assert len(callback.history) == 2
    scalars_dir = tmp_path / "tdhook_rl" / "scalars"
    names = [k for k in callback.history[0] if k != "frames"]
    assert "tdhook/overhead_fraction" in names and "eval/return" in names
    for name in names:
        expected = [(int(h["frames"]), h[name]) for h in callback.history]
        assert read_csv(scalars_dir / f"{name}.csv") == expected, name
    # which readout each head explains, logged once as the logger's hyper-parameters
    hparams = (tmp_path / "tdhook_rl" / "texts" / "hparams0.txt").read_text()
    assert "attribution/policy/target: ActionLogProb('action')" in hparams
    assert "attribution/method: Saliency(abs=False)" in hparams
    assert not (tmp_path / "tdhook_rl" / "texts" / "hparams1.txt").exists()


def test_a_logger_instance_is_used_as_given(tmp_path):
    logger = CSVLogger("mine", log_dir=str(tmp_path / "elsewhere"))
    callback = make_callback(tmp_path, logger=logger)
    assert callback.logger is logger
    scalars = callback(1000)
    logged = read_csv(tmp_path / "elsewhere" / "mine" / "scalars" / "eval" / "return.csv")
    assert logged == [(1000, scalars["eval/return"])]
    assert not (tmp_path / "tdhook_rl").exists()


def test_no_logger_logs_nothing_but_returns_and_keeps_the_scalars(tmp_path):
    callback = make_callback(tmp_path, logger=None)
    scalars = callback(1000)
    assert callback.logger is None
    assert scalars["eval/return"] == callback.history[-1]["eval/return"]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_a_missing_backend_fails_at_construction_with_one_line(tmp_path, backend, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)  # not importable, even where installed
    message = (
        f"InterpretabilityCallback(logger='{backend}') needs the `{backend}` package: "
        f"pip install {backend}"
    )
    with pytest.raises(ImportError) as info:
        make_callback(tmp_path, logger=backend)
    assert str(info.value) == message
    assert info.value.name == backend
    assert not any(tmp_path.iterdir())


def test_tensorboard_by_name_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the `tensorboard` package is not installed")
    callback = make_callback(tmp_path, logger="tensorboard")
    callback(1000)
    callback.logger.experiment.flush()
    assert list((tmp_path / "tdhook_rl").glob("events.out.tfevents.*"))


def test_an_unknown_logger_is_rejected(tmp_path):
    with pytest.raises(
        ValueError, match=r"one of \['csv', 'tensorboard', 'wandb'\], got 'neptune'"
    ):
        make_callback(tmp_path, logger="neptune")
    with pytest.raises(TypeError, match="got int"):
        make_callback(tmp_path, logger=42)


def test_logger_names_come_from_the_one_registry(tmp_path, monkeypatch):
    from tdhook_rl.callbacks import options
    from tdhook_rl.core import loggers

    assert options.LOGGER_BACKENDS is loggers.LOGGER_BACKENDS
    # a backend added to the registry is one the callback builds by name
    backend = loggers.LoggerBackend("CSVLogger", None, local=True)
    monkeypatch.setitem(loggers.LOGGER_BACKENDS, "my_csv", backend)
    callback = make_callback(tmp_path, logger="my_csv")
    callback(1000)
    assert (tmp_path / "tdhook_rl" / "scalars" / "eval" / "return.csv").exists()
