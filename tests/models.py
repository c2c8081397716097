"""Small seeded networks and environment factories shared by the tests."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv

OBS = 9
N_LOGITS = 4


def mlp(n_in: int, n_out: int, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                         nn.Tanh(), nn.Linear(hidden, n_out))


def actor_critic_mlp(seed: int = 0) -> TensorDictSequential:
    """Separate actor (``logits``) and critic (``state_value``) MLPs over ``observation``."""
    torch.manual_seed(seed)
    actor = TensorDictModule(mlp(OBS, N_LOGITS), ["observation"], ["logits"])
    critic = TensorDictModule(mlp(OBS, 1), ["observation"], ["state_value"])
    return TensorDictSequential(actor, critic)


class ConvNet(nn.Module):
    """A board-shaped input (3 x 5 x 5) -> (logits[3], value[1])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                  nn.Softplus(), nn.Flatten(-3))
        self.policy = nn.Linear(36, 3)
        self.value = nn.Linear(36, 1)

    def forward(self, board: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(board)
        return self.policy(h), torch.tanh(self.value(h))


def conv_actor_critic(seed: int = 0) -> TensorDictModule:
    torch.manual_seed(seed)
    return TensorDictModule(ConvNet(), ["board"], ["logits", "win"])


def make_double_pendulum() -> TransformedEnv:
    """Gymnasium's InvertedDoublePendulum-v5 with float32 observations (picklable factory)."""
    return TransformedEnv(GymEnv("InvertedDoublePendulum-v5"), DoubleToFloat())
