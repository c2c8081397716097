"""Checkpoints kept by :class:`~tdhook_rl.callbacks.InterpretabilityCallback` during
training (``checkpoints=CheckpointSpec(folder, ...)``), and concepts across them (McGrath et
al. 2022's layer x training-step maps, :func:`~tdhook_rl.concepts.across.probe_across`).

Every period the callback writes the module's state dict and the frame count to
``folder/frames_<12 digits>.pt``, atomically (a temporary file in the same folder, then a
rename), never over a file it did not write, keeping the newest ``keep``.
:func:`load_checkpoints` turns the folder back into the ``{frames: module}`` mapping
``probe_across`` takes, and :func:`concepts_across` (``callback.concepts_across()``) probes
the spec's concepts on the last evaluation rollout, writes the map and logs the table.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tdhook_rl.callbacks.options import CheckpointSpec
from tdhook_rl.callbacks.scalars import scalar_name
from tdhook_rl.concepts.across import ConceptTable, checkpoint_modules, probe_across

if TYPE_CHECKING:
    from tdhook_rl.callbacks.evaluation import InterpretabilityCallback

__all__ = ["CheckpointKeeper", "checkpoint_name", "concepts_across", "load_checkpoints"]

_PATTERN = re.compile(r"frames_(\d{12})\.pt")
_TMP_PREFIX = ".tdhook_rl_checkpoint-"


def checkpoint_name(frames: int) -> str:
    """The file name of the checkpoint at ``frames``.

    Examples:
        >>> checkpoint_name(2048)
        'frames_000000002048.pt'
    """
    return f"frames_{frames:012d}.pt"


def _ours(folder: Path) -> dict[int, Path]:
    """``{frames: path}`` of the checkpoint files in ``folder``, by frames."""
    found = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _PATTERN.fullmatch(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


class CheckpointKeeper:
    """Saves ``module``'s state dict every ``spec.every_frames`` (else ``every_frames``)
    collected frames, from the first call on.

    Args:
        module: the trained module (its current parameters are saved).
        spec: the :class:`~tdhook_rl.callbacks.CheckpointSpec`.
        every_frames: the period when the spec gives none (the callback's schedule).

    Raises:
        ValueError: ``spec.folder`` already holds checkpoint files (``frames_*.pt``) that
            this keeper would collide with; it touches nothing.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> keeper = CheckpointKeeper(nn.Linear(2, 1), CheckpointSpec(folder, keep=2), 100)
        >>> [keeper(f) is not None for f in (0, 50, 100, 250, 300)]
        [True, False, True, True, True]
        >>> sorted(p.name for p in folder.iterdir())  # the newest two
        ['frames_000000000250.pt', 'frames_000000000300.pt']
    """

    def __init__(self, module: nn.Module, spec: CheckpointSpec, every_frames: int) -> None:
        folder = Path(spec.folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"checkpoint folder {str(folder)!r} is a file: name a folder")
        foreign = _ours(folder)
        if foreign:
            names = ", ".join(p.name for p in list(foreign.values())[:3])
            raise ValueError(
                f"checkpoint folder {str(folder)!r} already holds {len(foreign)} checkpoint "
                f"file(s) ({names}{', ...' if len(foreign) > 3 else ''}) that this run would "
                "collide with: give a new folder or move those files"
            )
        folder.mkdir(parents=True, exist_ok=True)
        self.module = module
        self.spec = spec
        self.folder = folder
        self.every_frames = spec.every_frames or every_frames
        self.next_frames = 0
        self.written: dict[int, Path] = {}  # the files this keeper wrote and still keeps

    def due(self, frames: int) -> bool:
        return frames >= self.next_frames

    def __call__(self, frames: int, *, force: bool = False) -> Path | None:
        """Saves if due (or ``force``); the path written, else ``None``."""
        if not (force or self.due(frames)):
            return None
        while self.next_frames <= frames:
            self.next_frames += self.every_frames
        return self.save(frames)

    def save(self, frames: int) -> Path | None:
        """Writes the checkpoint at ``frames`` now; ``None`` (with a warning) when a file it
        did not write holds that name."""
        target = self.folder / checkpoint_name(frames)
        ours = frames in self.written
        if target.exists() and not ours:
            warnings.warn(
                f"checkpoint {str(target)!r} was not written by this callback: left alone, "
                f"no checkpoint at {frames} frames",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=_TMP_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"state_dict": state, "frames": int(frames)}, f)
                f.flush()
                os.fsync(f.fileno())
            if ours:
                os.replace(tmp, target)  # our own file at the same frames: replace it
            else:
                _place(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.written[frames] = target
        self._trim()
        return target

    def _trim(self) -> None:
        keep = self.spec.keep
        while keep is not None and len(self.written) > keep:
            oldest = min(self.written)
            self.written.pop(oldest).unlink(missing_ok=True)


def _place(tmp: str, target: Path) -> None:
    """Moves ``tmp`` to ``target`` unless ``target`` exists (a hard link fails then, so a
    file that appeared meanwhile is never overwritten); a rename where links do not work."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(
            f"checkpoint {str(target)!r} appeared while saving; left alone"
        ) from None
    except OSError:  # no hard links on this file system
        if target.exists():
            raise FileExistsError(f"checkpoint {str(target)!r} exists; left alone") from None
        os.replace(tmp, target)


def load_checkpoints(folder: str | Path, module: nn.Module) -> dict[int, nn.Module]:
    """``{frames: copy of module with that checkpoint's weights}`` (eval mode, by frames)
    from a folder the callback wrote, the mapping
    :func:`~tdhook_rl.concepts.across.probe_across` takes.

    Raises:
        FileNotFoundError: no ``frames_*.pt`` in ``folder``.
        ValueError: a file that is not such a checkpoint, or does not match ``module``.

    Examples:
        >>> import tempfile
        >>> folder, net = Path(tempfile.mkdtemp()), nn.Linear(2, 1)
        >>> _ = CheckpointKeeper(net, CheckpointSpec(folder), 10)(0)
        >>> mods = load_checkpoints(folder, net)
        >>> list(mods), torch.equal(mods[0].weight, net.weight), mods[0] is net
        ([0], True, False)
    """
    folder = Path(folder)
    files = _ours(folder)
    if not files:
        raise FileNotFoundError(
            f"no checkpoints (frames_<12 digits>.pt) in {str(folder)!r}: train with "
            "InterpretabilityCallback(..., checkpoints=CheckpointSpec(folder)) first"
        )
    states = {}
    for frames, path in files.items():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, Mapping) or payload.get("frames") != frames:
            raise ValueError(
                f"{str(path)!r} is not a callback checkpoint of {frames} frames (a dict with "
                "'state_dict' and 'frames'): move it out of the folder"
            )
        states[frames] = payload["state_dict"]
    return checkpoint_modules(module, states)


def concepts_across(
    callback: InterpretabilityCallback,
    concepts: Any = None,
    sites: Mapping[str, Any] | None = None,
    *,
    path: str | Path | None = None,
    **options: Any,
) -> ConceptTable:
    """Probes concepts at every site of every kept checkpoint on the callback's last
    evaluation rollout (with the random-network control), writes the McGrath map PNG and
    logs each row's ``concepts/<concept>/<site>/{score,selectivity}`` at its checkpoint's
    frames.

    Args:
        callback: a callback built with ``checkpoints=CheckpointSpec(...)``.
        concepts: a labeller ``td -> {name: tensor}``; default the spec's.
        sites: ``{name: site}``; default the spec's, else the probes' sites.
        path: the PNG; default ``log.log_dir / "figures" / "concepts_across.png"`` (the
            table goes beside it as ``.json``).
        **options: those of :func:`~tdhook_rl.concepts.across.probe_across`.
    """
    keeper = callback.checkpoints
    if keeper is None:
        raise ValueError(
            "concepts_across needs checkpoints: build the callback with "
            "checkpoints=CheckpointSpec(folder, concepts=labeller)"
        )
    labeller = concepts if concepts is not None else keeper.spec.concepts
    if labeller is None or not callable(labeller):
        raise ValueError(
            "concepts_across needs a labeller td -> {name: tensor}: CheckpointSpec(concepts=...) "
            "or concepts_across(concepts=...)"
        )
    if sites is None:  # after __post_init__ both are {name: site} or None
        default: Any = keeper.spec.sites or (callback.probes.sites if callback.probes else None)
        sites = default
    if not sites:
        raise ValueError("concepts_across needs sites: CheckpointSpec(sites=...) or ProbeSpec")
    rollout = callback.last_rollout
    if rollout is None:
        raise ValueError(
            "concepts_across probes the last evaluation rollout and there is none yet: call "
            "callback(frames, force=True) first"
        )
    start = time.perf_counter()
    labels = labeller(rollout)
    if not isinstance(labels, Mapping) or not labels:
        raise TypeError(
            f"the concepts labeller must return a non-empty {{name: tensor}}, got {labels!r}"
        )
    modules = load_checkpoints(keeper.folder, keeper.module)
    table = probe_across(modules, rollout, dict(sites), dict(labels), **options)
    if path is None:
        path = Path(callback.log.log_dir) / "figures" / "concepts_across.png"
    from tdhook_rl.concepts.across_plots import plot_concepts_across

    fig = plot_concepts_across(table, path=path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    table.to_json(Path(path).with_suffix(".json"))
    logger = callback.logger
    if logger is not None:
        for row in table.rows:
            for value in ("score", "selectivity"):
                if row[value] is not None:
                    name = scalar_name("concepts", row["concept"], row["site"], value)
                    logger.log_scalar(name, float(row[value]), step=row["step"])
    callback.last_concepts = table
    callback._cost += time.perf_counter() - start
    return table
