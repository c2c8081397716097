"""The shipped checkpoints of a short Connect Four training run, for concepts across training.

``checkpoints/round_NNNN.pt`` are the weights after ``NNNN`` PPO rounds of a *separate short
run* (not the shipped agent of ``checkpoint.pt``, which trained for 200 rounds), made by::

    python -m tdhook_rl.agents.connect_four.train --iterations 40 --save-every 10 \\
        --games 100 --out /tmp/h23_c4
    python -m tdhook_rl.agents.connect_four.training_run --source /tmp/h23_c4/checkpoints

The second command stores each state dict in float16 (:func:`compact`); :func:`load_round`
(the agent's :func:`~tdhook_rl.agents.connect_four.model.load`) restores float32 modules.

Examples:
    >>> rounds = training_checkpoints()
    >>> list(rounds)
    [0, 10, 20, 30, 40]
    >>> agent = load_round(40)
    >>> next(agent.parameters()).dtype
    torch.float32
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from tdhook_rl.agents.connect_four.model import load

__all__ = ["TRAINING_CHECKPOINTS", "compact", "load_round", "training_checkpoints"]

TRAINING_CHECKPOINTS = Path(__file__).with_name("checkpoints")
_HOW = "`python -m tdhook_rl.agents.connect_four.training_run` (see its docstring)"


def training_checkpoints(folder: str | Path | None = None) -> dict[int, Path]:
    """``{round: path}`` of the ``round_NNNN.pt`` files in ``folder`` (the shipped
    :data:`TRAINING_CHECKPOINTS` by default), in training order.

    Raises:
        FileNotFoundError: no ``round_*.pt`` in the folder.
    """
    folder = TRAINING_CHECKPOINTS if folder is None else Path(folder)
    paths = sorted(folder.glob("round_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no round_*.pt checkpoints in {folder}; make them with {_HOW}")
    return {int(p.stem.split("_")[1]): p for p in paths}


def load_round(
    round_: int, device: torch.device | str = "cpu", folder: str | Path | None = None
) -> Any:
    """The agent after ``round_`` training rounds (float32, eval mode).

    Raises:
        KeyError: no checkpoint of that round, naming the rounds there are.
    """
    paths = training_checkpoints(folder)
    if round_ not in paths:
        raise KeyError(f"no checkpoint of round {round_}; rounds: {list(paths)}")
    return load(device, checkpoint=paths[round_])


def compact(source: str | Path, target: str | Path | None = None) -> dict[int, Path]:
    """Copies ``source/round_*.pt`` (written by ``train.py --save-every``) to ``target``
    with float16 weights (config and meta kept): about half the size.

    Returns:
        ``{round: written path}``.
    """
    target = TRAINING_CHECKPOINTS if target is None else Path(target)
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for step, path in training_checkpoints(source).items():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved["state_dict"] = {
            k: v.half() if v.is_floating_point() else v for k, v in saved["state_dict"].items()
        }
        out[step] = target / path.name
        torch.save(saved, out[step])
    return out


def main(argv: list[str] | None = None) -> None:
    """The command line: :func:`compact` of ``--source`` into ``--target``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="OUT/checkpoints of train.py")
    parser.add_argument("--target", type=Path, default=TRAINING_CHECKPOINTS)
    args = parser.parse_args(argv)
    for step, path in compact(args.source, args.target).items():
        print(f"round {step}: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
