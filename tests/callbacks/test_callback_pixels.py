"""The callback on pixel observations: one scalar per channel instead of one per pixel, a
bounded features-x-steps figure, and spatial attribution maps."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.utils import check_env_specs
from torchrl.modules import ProbabilisticActor

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import InterpretabilityCallback
from tdhook_rl.targets import ActionLogProb

SIZE = 12


class MovingDot(EnvBase):
    """A dot on a 12x12 grid moved by 4 actions towards a fixed target; pixels [3, 12, 12]:
    the dot, the target, and a constant background channel."""

    def __init__(self) -> None:
        super().__init__(batch_size=[])
        self.observation_spec = Composite(pixels=Bounded(0.0, 1.0, (3, SIZE, SIZE)))
        self.action_spec = Categorical(4)
        self.reward_spec = Unbounded((1,))
        self.dot = torch.tensor([0, 0])
        self.target = torch.tensor([8, 3])
        self.rng = torch.Generator().manual_seed(0)
        self.steps = 0

    def _pixels(self) -> torch.Tensor:
        pixels = torch.zeros(3, SIZE, SIZE)
        pixels[0, self.dot[0], self.dot[1]] = 1.0
        pixels[1, self.target[0], self.target[1]] = 1.0
        pixels[2] = 0.5
        return pixels

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        self.dot = torch.randint(0, SIZE, (2,), generator=self.rng)
        self.steps = 0
        return TensorDict(pixels=self._pixels(), done=torch.tensor([False]))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        moves = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1]])
        self.dot = (self.dot + moves[tensordict["action"]]).clamp(0, SIZE - 1)
        self.steps += 1
        distance = (self.dot - self.target).abs().sum()
        done = torch.tensor([bool(distance == 0) or self.steps >= 10])
        return TensorDict(
            pixels=self._pixels(),
            reward=-distance.float().reshape(1),
            done=done,
            terminated=done.clone(),
        )

    def _set_seed(self, seed: int | None) -> None:
        self.rng = torch.Generator().manual_seed(seed or 0)


def conv_policy() -> TensorDictSequential:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Flatten(-3))
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(trunk, nn.Linear(8 * SIZE * SIZE, 4)), ["pixels"], ["logits"]
        ),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        spec=Categorical(4),
        return_log_prob=True,
    )
    value = TensorDictModule(
        nn.Sequential(nn.Flatten(-3), nn.Linear(3 * SIZE * SIZE, 1)), ["pixels"], ["state_value"]
    )
    return TensorDictSequential(actor, value)


def test_pixel_policy_logs_channel_shares_and_draws_maps(tmp_path):
    env = MovingDot()
    check_env_specs(env)
    callback = InterpretabilityCallback(
        env,
        conv_policy(),
        targets={"policy": ActionLogProb(), "value": "state_value"},
        inputs=["pixels"],
        method=Saliency(abs=False),
        every_frames=10,
        eval_steps=30,
        log_dir=tmp_path,
        figures_every=1,
        max_overhead=None,
    )
    scalars = callback(None, 10)
    attribution_keys = sorted(k for k in scalars if k.startswith("attribution/"))
    assert attribution_keys == [
        f"attribution/{head}/channel_{c}" for head in ("policy", "value") for c in range(3)
    ]
    rollout = callback.last_rollout
    for head in ("policy", "value"):
        a = rollout["attribution", head, "pixels"].abs()  # [T, 3, 12, 12]
        per_channel = a.sum((-1, -2)).mean(0)
        want = per_channel / per_channel.sum()
        got = torch.tensor([scalars[f"attribution/{head}/channel_{c}"] for c in range(3)])
        torch.testing.assert_close(got, want)
    figures = sorted(p.name.split("_0")[0] for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["attribution_maps", "attribution_over_time", "feature_shares"]
