"""The MinAtar env: TorchRL specs, and step-for-step agreement with MinAtar's own
``Environment`` seeded the same way and fed the same actions (observations, rewards,
terminations, across resets)."""

from __future__ import annotations

import minatar
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import SerialEnv
from torchrl.envs.utils import check_env_specs

from tdhook_rl.envs.minatar import BREAKOUT_CHANNELS, MinAtarEnv


@pytest.mark.parametrize("batch_size", [(), (3,)])
def test_specs(batch_size):
    env = MinAtarEnv("breakout", batch_size=batch_size, max_steps=20)
    env.set_seed(0)
    check_env_specs(env)
    td = env.reset()
    assert td["observation"].shape == (*batch_size, len(BREAKOUT_CHANNELS), 10, 10)
    assert td["observation"].dtype == torch.float32
    assert env.action_spec.n == 3 and env.action_names == ["noop", "left", "right"]


def test_serial_env_batches_single_games():
    env = SerialEnv(2, lambda: MinAtarEnv("breakout"))
    env.set_seed(0)
    check_env_specs(env)
    env.close()


def test_all_six_actions():
    env = MinAtarEnv("breakout", minimal_actions=False)
    assert env.action_spec.n == 6
    assert env.action_names == ["noop", "left", "up", "right", "down", "fire"]


def _reference(seed: int, sticky: float = 0.1) -> minatar.Environment:
    game = minatar.Environment("breakout", sticky_action_prob=sticky)
    game.seed(seed)
    game.reset()
    return game


@pytest.mark.parametrize("sticky", [0.1, 0.0])
def test_dynamics_match_minatar(sticky):
    seed, n, steps = 7, 3, 400
    env = MinAtarEnv("breakout", batch_size=[n], sticky_action_prob=sticky)
    env.set_seed(seed)
    td = env.reset()
    games = [_reference(seed + i, sticky) for i in range(n)]
    minimal = games[0].minimal_action_set()
    actions = torch.randint(3, (steps, n), generator=torch.Generator().manual_seed(0))
    resets = 0
    for t in range(steps):
        expected = np.stack([g.state() for g in games]).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(td["observation"].numpy(), expected.astype(np.float32))
        td["action"] = actions[t]
        td = env.step(td)
        for i, g in enumerate(games):
            reward, terminal = g.act(minimal[int(actions[t, i])])
            assert float(td["next", "reward"][i]) == reward, (t, i)
            assert bool(td["next", "terminated"][i]) == terminal, (t, i)
        done = td["next", "done"].squeeze(-1)
        td = td["next"]
        if done.any():
            resets += int(done.sum())
            td = env.reset(td.set("_reset", done.unsqueeze(-1)))
            for i in done.nonzero().flatten().tolist():
                games[i].reset()
    assert resets >= 3  # random play loses the ball: the resets were exercised


def test_rollout_of_one_game_matches_minatar():
    env = MinAtarEnv("breakout")
    env.set_seed(3)
    actions = iter([2, 2, 1, 0, 1, 1, 2, 0] * 10)

    def policy(td):
        return td.set("action", torch.tensor(next(actions)))

    rollout = env.rollout(60, policy)
    game = _reference(3)
    minimal = game.minimal_action_set()
    for t in range(rollout.shape[0]):
        expected = torch.as_tensor(game.state().transpose(2, 0, 1), dtype=torch.float32)
        assert torch.equal(rollout["observation"][t], expected), t
        reward, terminal = game.act(minimal[int(rollout["action"][t])])
        assert float(rollout["next", "reward"][t]) == reward
        assert bool(rollout["next", "done"][t]) == terminal


def test_max_steps_truncates():
    env = MinAtarEnv("breakout", batch_size=[2], max_steps=5, sticky_action_prob=0.0)
    env.set_seed(0)
    rollout = env.rollout(5, break_when_any_done=False)
    truncated = rollout["next", "truncated"].squeeze(-1)
    terminated = rollout["next", "terminated"].squeeze(-1)
    assert truncated[:, -1].all() and not truncated[:, :-1].any() and not terminated.any()
    assert rollout["next", "step_count"][:, -1].flatten().tolist() == [5, 5]


def test_same_seed_same_games():
    a, b = MinAtarEnv(batch_size=[2]), MinAtarEnv(batch_size=[2])
    a.set_seed(11)
    b.set_seed(11)
    torch.manual_seed(0)
    ra = a.rollout(50, break_when_any_done=False)
    torch.manual_seed(0)
    rb = b.rollout(50, break_when_any_done=False)
    assert torch.equal(ra["observation"], rb["observation"])


def test_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        MinAtarEnv(batch_size=[2, 2])
    with pytest.raises(ValueError, match="max_steps"):
        MinAtarEnv(max_steps=0)
    env = MinAtarEnv(batch_size=[2])
    env.reset()
    with pytest.raises(ValueError, match="one per game"):
        env._step(TensorDict(action=torch.zeros(3, dtype=torch.long)))
