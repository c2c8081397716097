"""The evaluation callback fires at the right frame counts, logs the expected keys, and works
from a plain loop and on a TorchRL Trainer."""

from __future__ import annotations

import torch
from torchrl.collectors import Collector
from torchrl.modules import ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.record.loggers import CSVLogger
from torchrl.trainers import Trainer

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import (
    AttributionSpec,
    InterpretabilityCallback,
    Interventions,
    LogTo,
    Schedule,
)
from tdhook_rl.interventions import Ablate
from tdhook_rl.targets import ActionLogProb

from models import OBS, PointMassEnv, gaussian_actor

NAMES = [f"x{i}" for i in range(OBS)]


def make_callback(tmp_path, interventions=None):
    return InterpretabilityCallback(
        PointMassEnv(),
        gaussian_actor(action_dim=1),
        AttributionSpec(
            {"policy": ActionLogProb()}, method=Saliency(abs=False), feature_names=NAMES
        ),
        # exact firing frames: no time-based deferral
        schedule=Schedule(every_frames=1000, eval_steps=25, max_overhead=None),
        interventions=interventions,
        log=LogTo("csv", log_dir=tmp_path, figures_every=1),
    )


def test_fires_at_the_right_frames_and_logs_the_expected_keys(tmp_path):
    callback = make_callback(
        tmp_path, Interventions({"all units": {"module.0.module.0.1": Ablate()}}, episodes=2)
    )
    fired = [f for f in (0, 500, 999, 1000, 1500, 2100, 2500, 3000) if callback(f) is not None]
    assert fired == [1000, 2100, 3000]
    scalars = callback.history[-1]
    expected = {
        "eval/return",
        "eval/episode_length",
        "tdhook/eval_seconds",
        "intervention/all_units/return_change",
    } | {f"attribution/policy/{n}" for n in NAMES}
    assert expected <= set(scalars)
    shares = [scalars[f"attribution/policy/{n}"] for n in NAMES]
    assert abs(sum(shares) - 1) < 1e-5
    csv = tmp_path / "tdhook_rl" / "scalars" / "eval" / "return.csv"
    steps = [int(line.split(",")[0]) for line in csv.read_text().splitlines()]
    assert steps == [1000, 2100, 3000]
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert "feature_shares_000001000.png" in pngs and len(pngs) == 6


def test_registered_on_a_torchrl_trainer(tmp_path):
    actor = gaussian_actor(action_dim=1)
    critic = ValueOperator(torch.nn.Linear(OBS, 1), in_keys=["observation"])
    collector = Collector(PointMassEnv(), actor, frames_per_batch=200, total_frames=1000)
    loss = ClipPPOLoss(actor, critic)
    logger = CSVLogger("trainer", log_dir=str(tmp_path))
    trainer = Trainer(
        collector=collector,
        total_frames=1000,
        frame_skip=1,
        optim_steps_per_batch=1,
        loss_module=loss,
        optimizer=torch.optim.Adam(loss.parameters(), 1e-3),
        logger=logger,
        progress_bar=False,
        log_interval=1,
    )
    callback = InterpretabilityCallback(
        PointMassEnv(),
        actor,
        AttributionSpec({"policy": ActionLogProb()}),
        schedule=Schedule(every_frames=400, eval_steps=20, max_overhead=None),
        log=LogTo("csv", log_dir=tmp_path, figures_every=0),
    )
    callback.register(trainer)
    trainer.train()
    collector.shutdown()
    assert [int(h["frames"]) for h in callback.history] == [400, 800]
    logged = tmp_path / "trainer" / "scalars" / "eval" / "return.csv"
    assert logged.exists()  # through the trainer's own logger
