"""The callback on pixel observations: one scalar per channel instead of one per pixel (per
block of rows and columns for a single-channel image), a bounded features-x-steps figure, and
spatial attribution maps."""

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
from tdhook_rl.callbacks import AttributionSpec, InterpretabilityCallback, LogTo, Schedule
from tdhook_rl.targets import ActionLogProb

SIZE = 12


class MovingDot(EnvBase):
    """A dot on a 12x12 grid moved by 4 actions towards a fixed target; pixels [3, 12, 12]:
    the dot, the target, and a constant background channel (``channels=1``: the dot and the
    target in one channel, [1, 12, 12])."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__(batch_size=[])
        self.channels = channels
        self.observation_spec = Composite(pixels=Bounded(0.0, 1.0, (channels, SIZE, SIZE)))
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
        return pixels if self.channels == 3 else pixels[:2].sum(0, keepdim=True)

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


def conv_policy(channels: int = 3) -> TensorDictSequential:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.Tanh(), nn.Flatten(-3))
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
        nn.Sequential(nn.Flatten(-3), nn.Linear(channels * SIZE * SIZE, 1)),
        ["pixels"],
        ["state_value"],
    )
    return TensorDictSequential(actor, value)


def pixel_callback(env, policy, tmp_path):
    return InterpretabilityCallback(
        env,
        policy,
        AttributionSpec(
            {"policy": ActionLogProb(), "value": "state_value"},
            inputs=["pixels"],
            method=Saliency(abs=False),
        ),
        schedule=Schedule(every_frames=10, eval_steps=30, max_overhead=None),
        log=LogTo("csv", log_dir=tmp_path, figures_every=1),
    )


def test_pixel_policy_logs_channel_shares_and_draws_maps(tmp_path):
    env = MovingDot()
    check_env_specs(env)
    callback = pixel_callback(env, conv_policy(), tmp_path)
    scalars = callback(10)
    attribution_keys = sorted(
        k for k in scalars if k.startswith("attribution/") and "rounding" not in k
    )
    assert attribution_keys == [
        f"attribution/{head}/channel_{c}" for head in ("policy", "value") for c in range(3)
    ]
    assert scalars["attribution/policy/rounding_level"] == 0.0
    rollout = callback.last_rollout
    for head in ("policy", "value"):
        a = rollout["attribution", head, "pixels"].abs()  # [T, 3, 12, 12]
        per_channel = a.sum((-1, -2)).mean(0)
        want = per_channel / per_channel.sum()
        got = torch.tensor([scalars[f"attribution/{head}/channel_{c}"] for c in range(3)])
        torch.testing.assert_close(got, want)
    figures = sorted(p.name.split("_0")[0] for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["attribution_maps", "attribution_over_time", "feature_shares"]


def test_a_single_channel_image_is_split_into_blocks_of_rows_and_columns(tmp_path):
    """One channel would be one constant share of 1.0: it is cut into a 3 x 3 grid instead."""
    env = MovingDot(channels=1)
    check_env_specs(env)
    callback = pixel_callback(env, conv_policy(channels=1), tmp_path)
    scalars = callback(10)
    bands = [(0, 3), (4, 7), (8, 11)]  # 12 rows (columns) in 3 bands of 4
    names = [f"rows_{r0}-{r1}_cols_{c0}-{c1}" for r0, r1 in bands for c0, c1 in bands]
    rollout = callback.last_rollout
    for head in ("policy", "value"):
        got = torch.tensor([scalars[f"attribution/{head}/{n}"] for n in names])
        a = rollout["attribution", head, "pixels"].abs()[:, 0]  # [T, 12, 12]
        # the slow way: every pixel of each block
        want = torch.stack(
            [
                a[:, r0 : r1 + 1, c0 : c1 + 1].sum((-1, -2)).mean(0)
                for r0, r1 in bands
                for c0, c1 in bands
            ]
        )
        torch.testing.assert_close(got, want / want.sum())
        assert not any(v == 1.0 for v in got.tolist())
        logged = [k for k in scalars if k.startswith(f"attribution/{head}/")]
        assert sorted(logged) == sorted(
            [f"attribution/{head}/{n}" for n in names] + [f"attribution/{head}/rounding_level"]
        )
    figures = sorted(p.name.split("_0")[0] for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["attribution_maps", "attribution_over_time", "feature_shares"]
