"""Small seeded networks and environment factories shared by the tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import DoubleToFloat, EnvBase, GymEnv, TransformedEnv

from tdhook_rl import ModuleSite

OBS = 9
N_LOGITS = 4


def mlp(n_in: int, n_out: int, hidden: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_out),
    )


def actor_critic_mlp(seed: int = 0) -> TensorDictSequential:
    """Separate actor (``logits``) and critic (``state_value``) MLPs over ``observation``."""
    torch.manual_seed(seed)
    actor = TensorDictModule(mlp(OBS, N_LOGITS), ["observation"], ["logits"])
    critic = TensorDictModule(mlp(OBS, 1), ["observation"], ["state_value"])
    return TensorDictSequential(actor, critic)


# actor_critic_mlp(): module.0 = actor (module.0.module: its nn.Sequential), module.1 = critic
ACTOR_CRITIC_SITES = {
    "actor_h1": "module.0.module.1",
    "actor_h2": "module.0.module.3",
    "critic_in": ModuleSite("module.1.module.0", io="input"),
}


class ConvNet(nn.Module):
    """A board-shaped input (3 x 5 x 5) -> (logits[3], value[1])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3),
            nn.Softplus(),
            nn.Flatten(-3),
        )
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


def gaussian_actor(distribution: str = "tanh_normal", seed: int = 0, action_dim: int = 2):
    """A ProbabilisticActor over ``observation`` with a TanhNormal or a plain Normal."""
    from tensordict.nn import NormalParamExtractor
    from torchrl.modules import ProbabilisticActor, TanhNormal

    torch.manual_seed(seed)
    net = nn.Sequential(mlp(OBS, 2 * action_dim), NormalParamExtractor())
    dist = {"tanh_normal": TanhNormal, "normal": torch.distributions.Normal}[distribution]
    return ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=dist,
        return_log_prob=True,
    )


def categorical_actor(distribution: str = "categorical", seed: int = 0):
    """A ProbabilisticActor over ``N_LOGITS`` discrete actions (masked: reads ``action_mask``)."""
    from torchrl.modules import MaskedCategorical, OneHotCategorical, ProbabilisticActor

    torch.manual_seed(seed)
    net = TensorDictModule(mlp(OBS, N_LOGITS), ["observation"], ["logits"])
    if distribution == "masked":
        return ProbabilisticActor(
            net,
            in_keys={"logits": "logits", "mask": "action_mask"},
            distribution_class=MaskedCategorical,
        )
    dist = {"categorical": torch.distributions.Categorical, "one_hot": OneHotCategorical}
    return ProbabilisticActor(net, in_keys=["logits"], distribution_class=dist[distribution])


def shared_trunk_actor_critic(seed: int = 0, action_dim: int = 1):
    """An ActorValueOperator: trunk -> hidden -> (TanhNormal policy, state_value)."""
    from tensordict.nn import NormalParamExtractor
    from torchrl.modules import ActorValueOperator, ProbabilisticActor, TanhNormal, ValueOperator

    torch.manual_seed(seed)
    trunk = TensorDictModule(
        nn.Sequential(nn.Linear(OBS, 32), nn.Tanh()), ["observation"], ["hidden"]
    )
    head = nn.Sequential(nn.Linear(32, 2 * action_dim), NormalParamExtractor())
    policy = ProbabilisticActor(
        TensorDictModule(head, ["hidden"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    value = ValueOperator(nn.Linear(32, 1), in_keys=["hidden"])
    return ActorValueOperator(trunk, policy, value)


class PointMassEnv(EnvBase):
    """A batched pure-torch toy task: push a point mass toward 0; done when |x| > 2.

    Observation ``[x, v]`` (padded to ``OBS`` features so the shared networks fit), action in
    ``[-1, 1]``, reward ``1 - x^2``. Resets draw ``x ~ U(-1, 1)`` from the env's generator.
    """

    def __init__(self, batch_size=(), device="cpu"):
        super().__init__(batch_size=torch.Size(batch_size), device=device)
        self.observation_spec = Composite(
            observation=Unbounded((*self.batch_size, OBS)), shape=self.batch_size
        )
        self.action_spec = Bounded(-1.0, 1.0, (*self.batch_size, 1))
        self.reward_spec = Unbounded((*self.batch_size, 1))
        self.generator = torch.Generator()

    def _obs(self, x, v):
        pad = torch.zeros(*self.batch_size, OBS - 2)
        return torch.cat([x, v, pad], -1)

    def _starts(self) -> torch.Tensor:
        """Each copy's start position, ``(*batch, 1)``."""
        return torch.rand((*self.batch_size, 1), generator=self.generator) * 2 - 1

    def _reset(self, td):
        x = self._starts()
        if td is not None and "_reset" in td.keys() and hasattr(self, "_x"):
            reset = td["_reset"].reshape(*self.batch_size, 1)
            self._x = torch.where(reset, x, self._x)
            self._v = torch.where(reset, torch.zeros_like(x), self._v)
        else:
            self._x, self._v = x, torch.zeros_like(x)
        done = torch.zeros((*self.batch_size, 1), dtype=torch.bool)
        return TensorDict(
            observation=self._obs(self._x, self._v),
            done=done,
            terminated=done.clone(),
            batch_size=self.batch_size,
        )

    def _step(self, td):
        self._v = 0.9 * self._v + 0.1 * td["action"].clamp(-1, 1)
        self._x = self._x + self._v
        done = self._x.abs() > 2
        return TensorDict(
            observation=self._obs(self._x, self._v),
            reward=1 - self._x**2,
            done=done,
            terminated=done.clone(),
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        self.generator.manual_seed(int(seed))
