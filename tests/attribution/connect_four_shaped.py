"""A small random conv actor-critic over Connect-Four-shaped boards (3 x 6 x 7), with
``nn.ReLU`` modules (what guided backpropagation overrides), for the attribution tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

BOARD = (3, 6, 7)
MOVES = 7


class BoardTrunk(nn.Module):
    """``[*batch, 3, 6, 7]`` -> ``[*batch, 160]``; the convs see one flat batch dimension
    (or none, for one board)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU()
        )

    def forward(self, board: torch.Tensor) -> torch.Tensor:
        batch = board.shape[:-3]
        flat = board if len(batch) <= 1 else board.reshape(-1, *BOARD)
        return self.conv(flat).flatten(-3).reshape(*batch, -1)


class BoardNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = BoardTrunk()
        self.policy = nn.Sequential(nn.Linear(160, 32), nn.ReLU(), nn.Linear(32, MOVES))
        self.value = nn.Sequential(nn.Linear(160, 16), nn.ReLU(), nn.Linear(16, 1), nn.Tanh())

    def forward(self, board: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(board)
        return self.policy(h), self.value(h)


def board_actor_critic(seed: int = 0) -> TensorDictModule:
    """``observation`` -> ``logits`` [7], ``state_value`` [1]."""
    torch.manual_seed(seed)
    return TensorDictModule(BoardNet(), ["observation"], ["logits", "state_value"])


def boards(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random one-hot-like boards (0/1 planes) plus noise, so that ReLUs see both signs."""
    g = torch.Generator().manual_seed(seed)
    planes = (torch.rand(*shape, *BOARD, generator=g) < 0.3).float()
    return planes + 0.1 * torch.randn(*shape, *BOARD, generator=g)


class Head(nn.Module):
    """One output of a TensorDict module as a plain ``nn.Module`` (captum's guided methods
    hook the ReLUs of an ``nn.Module``): ``(N, *obs) -> (N, width)``."""

    def __init__(self, module: nn.Module, key: str, in_key: str = "observation") -> None:
        super().__init__()
        self.module, self.key, self.in_key = module, key, in_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        td = TensorDict({self.in_key: x}, batch_size=x.shape[:1])
        return self.module(td)[self.key]
