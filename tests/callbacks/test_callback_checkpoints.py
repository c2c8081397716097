"""Checkpoints kept by the callback during a short real training loop: the files hold the
frame counts they are named by, loading step s gives exactly the parameters the module had at
step s (copies kept by the test), concepts across them equal ``probe_across`` on networks the
test rebuilt by hand and find a planted concept (a linear function of one hidden unit), and
files the callback did not write are never touched."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import (
    AttributionSpec,
    CheckpointSpec,
    InterpretabilityCallback,
    LogTo,
    Schedule,
    load_checkpoints,
)
from tdhook_rl.callbacks import checkpoints as ckpt_module
from tdhook_rl.concepts.across import probe_across

from models import OBS, PointMassEnv

SITES = {"pre": "module.0", "h": "module.1"}
PLANTED_UNIT = 2


class RecordingLogger:
    """A duck-typed logger that keeps every ``log_scalar`` call."""

    def __init__(self):
        self.calls: list[tuple[str, float, int]] = []

    def log_scalar(self, name, value, step=None):
        self.calls.append((name, value, step))


def make_actor(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, 1), nn.Tanh())
    with torch.no_grad():  # a saturated unit, ~sign(x + v): not linear in the input
        net[0].weight[PLANTED_UNIT] = 0.0
        net[0].weight[PLANTED_UNIT, :2] = 20.0
        net[0].bias[PLANTED_UNIT] = 0.0
    return TensorDictModule(net, ["observation"], ["action"])


def labeller_of(actor):
    """Concepts on a rollout: one planted (3 x unit 2 of the current hidden layer - 1, a
    saturated unit no linear read-out of the input matches) and one pure noise, seeded."""

    def labeller(td):
        with torch.no_grad():
            h = actor.module[1](actor.module[0](td["observation"]))
        gen = torch.Generator().manual_seed(7)
        return {
            "planted": 3 * h[..., PLANTED_UNIT] - 1,
            "noise": torch.randn(td.shape, generator=gen),
        }

    return labeller


def make_callback(tmp_path, folder, logger=None, every=100, keep=None, actor=None):
    env = PointMassEnv(batch_size=(4,))
    env.set_seed(0)
    actor = actor if actor is not None else make_actor()
    return InterpretabilityCallback(
        env,
        actor,
        AttributionSpec({"force": ("action", 0)}, method=Saliency(abs=False)),
        schedule=Schedule(every_frames=250, eval_steps=50, max_overhead=None),
        log=LogTo(logger, log_dir=tmp_path / "logs", figures_every=0),
        checkpoints=CheckpointSpec(
            folder, every_frames=every, keep=keep, concepts=labeller_of(actor), sites=SITES
        ),
    )


def train(callback, iterations=10, frames_per_step=50):
    """A plain optimizer loop (push the action toward -x); ``callback(frames)`` after each
    step and once before training. Returns ``{frames: state dict copy}`` at every call."""
    actor = callback.module
    optim = torch.optim.Adam(actor.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(3)
    kept = {0: copy.deepcopy(actor.state_dict())}
    callback(0)
    frames = 0
    for _ in range(iterations):
        obs = torch.zeros(64, OBS)
        obs[:, :2] = torch.rand(64, 2, generator=gen) * 4 - 2
        loss = ((actor.module(obs)[:, 0] + 0.5 * obs[:, 0]) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        frames += frames_per_step
        kept[frames] = copy.deepcopy(actor.state_dict())
        callback(frames)
    return kept


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_checkpoints_load_back_exactly_and_concepts_across_find_the_planted_unit(tmp_path):
    folder = tmp_path / "ckpt"
    logger = RecordingLogger()
    callback = make_callback(tmp_path, folder, logger=logger)
    kept = train(callback)
    expected = [0, 100, 200, 300, 400, 500]
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"frames_{f:012d}.pt" for f in expected]  # no temporary files left
    for f in expected:
        assert torch.load(folder / names[expected.index(f)], weights_only=True)["frames"] == f

    modules = load_checkpoints(folder, callback.module)
    assert list(modules) == expected
    for f, module in modules.items():
        assert module is not callback.module
        state = module.state_dict()
        assert state.keys() == kept[f].keys()
        for key, value in kept[f].items():
            assert torch.equal(state[key], value), (f, key)
    # the parameters did move between checkpoints (the comparison above can fail)
    assert not torch.equal(kept[0]["module.0.weight"], kept[500]["module.0.weight"])

    table = callback.concepts_across()
    assert len(table.rows) == 2 * len(SITES) * len(expected)  # concept x layer x checkpoint
    assert table.steps == expected and set(table.sites) == set(SITES)

    # the reference: probe_across on networks rebuilt from the test's own copies
    rebuilt = {}
    for f in expected:
        net = make_actor(seed=99)
        net.load_state_dict(kept[f])
        rebuilt[f] = net.eval()
    labels = labeller_of(callback.module)(callback.last_rollout)
    reference = probe_across(rebuilt, callback.last_rollout, SITES, labels)
    assert [(r["concept"], r["site"], r["step"]) for r in table.rows] == [
        (r["concept"], r["site"], r["step"]) for r in reference.rows
    ]
    for got, ref in zip(table.rows, reference.rows, strict=True):
        assert got["score"] == pytest.approx(ref["score"], abs=1e-9)
        assert got["control"] == pytest.approx(ref["control"], abs=1e-9)

    planted = table.grid("planted")  # [sites, steps]
    h = table.sites.index("h")
    assert planted[h, -1] > 0.99  # found at the layer it was planted in, at the last step
    assert (planted[table.sites.index("pre")] < 0.95).all()  # pre-activations: linear in x
    assert (table.grid("planted", "control") < 0.95).all()  # the random network: not found
    assert table.grid("planted", "selectivity")[h, -1] > 0.05
    assert (table.grid("noise") < 0.2).all()

    logged = {(n, s): v for n, v, s in logger.calls if n.startswith("concepts/")}
    for r in table.rows:
        name = f"concepts/{r['concept']}/{r['site']}/selectivity"
        assert logged[name, r["step"]] == pytest.approx(r["score"] - r["control"])
    figure = tmp_path / "logs" / "figures" / "concepts_across.png"
    assert figure.stat().st_size > 1000 and figure.with_suffix(".json").exists()


def test_keep_bounds_the_files_and_foreign_files_are_never_touched(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    (folder / "round_0001.pt").write_bytes(b"not the callback's")
    (folder / "frames_12.pt").write_bytes(b"another naming, no collision")
    before = digest(folder)
    callback = make_callback(tmp_path, folder, keep=2)
    kept = train(callback)
    after = digest(folder)
    assert {k: after[k] for k in before} == before
    ours = sorted(set(after) - set(before))
    assert ours == ["frames_000000000400.pt", "frames_000000000500.pt"]
    modules = load_checkpoints(folder, callback.module)
    assert list(modules) == [400, 500]
    assert torch.equal(modules[400].module[0].weight, kept[400]["module.0.weight"])


def test_a_folder_holding_colliding_checkpoints_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "frames_000000000100.pt").write_bytes(b"an earlier run")
    before = digest(folder)
    with pytest.raises(ValueError, match=r"frames_000000000100\.pt.*new folder"):
        make_callback(tmp_path, folder)
    assert digest(folder) == before


def test_a_file_appearing_during_training_is_not_overwritten(tmp_path):
    folder = tmp_path / "ckpt"
    callback = make_callback(tmp_path, folder)
    callback(0)
    intruder = folder / "frames_000000000100.pt"
    intruder.write_bytes(b"someone else's")
    with pytest.warns(RuntimeWarning, match="not written by this callback"):
        callback(100)
    assert intruder.read_bytes() == b"someone else's"
    callback(200)
    assert (folder / "frames_000000000200.pt").exists()


def test_a_failed_save_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    callback = make_callback(tmp_path, folder)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        callback(0)
    assert list(folder.iterdir()) == []


def test_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="keep must be None or an int >= 1"):
        CheckpointSpec(tmp_path, keep=0)
    with pytest.raises(TypeError, match="labeller"):
        CheckpointSpec(tmp_path, concepts={"x": 1})
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        load_checkpoints(tmp_path, make_actor())
    callback = make_callback(tmp_path, tmp_path / "ckpt")
    callback(0)
    with pytest.raises(ValueError, match="there is none yet"):
        callback.concepts_across()
    wider = TensorDictModule(nn.Sequential(nn.Linear(OBS, 32), nn.Tanh()), ["observation"], ["a"])
    with pytest.raises(ValueError, match="checkpoint 0 does not match"):
        load_checkpoints(tmp_path / "ckpt", wider)


def test_on_a_trainer_checkpoints_follow_its_collected_frames(tmp_path):
    class Trainer:  # what register() uses of a TorchRL Trainer
        collected_frames = 0

        def register_op(self, stage, op):
            self.op = op

    trainer, folder = Trainer(), tmp_path / "ckpt"
    callback = make_callback(tmp_path, folder, every=100)
    callback.register(trainer)
    batch = PointMassEnv(batch_size=(4,)).reset()
    for frames in (0, 60, 120, 180, 240):
        trainer.collected_frames = frames
        trainer.op(batch)
    assert sorted(p.name for p in folder.iterdir()) == [
        "frames_000000000000.pt",
        "frames_000000000120.pt",
        "frames_000000000240.pt",
    ]
