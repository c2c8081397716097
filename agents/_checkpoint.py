"""Reading a shipped agent's checkpoint: one place for the missing-file message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def read_checkpoint(path: Path, device: torch.device | str, how_to_train: str) -> dict[str, Any]:
    """``torch.load`` of a checkpoint written by an agent's ``train.py`` (tensors only).

    Args:
        path: the checkpoint file.
        device: where its tensors go.
        how_to_train: the command(s) that write one, named in the error when ``path`` is
            missing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with {how_to_train}")
    return torch.load(path, map_location=device, weights_only=True)
