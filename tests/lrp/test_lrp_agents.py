"""LRP on the shipped agents' networks: Connect Four (trained) and Breakout (conv trunks
with functional ReLUs) against zennit 0.5.1; chess's move head is not covered (clear error)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from zennit_loader import load_zennit

import tdhook_rl as thr
from tdhook_rl.attribution.lrp import LRP, EpsilonPlus

zennit = load_zennit()


def _zennit(net, x, column):
    onehot = torch.zeros(net(x).shape)
    onehot[..., column] = 1.0
    with zennit.attribution.Gradient(net, zennit.composites.EpsilonPlus()) as attributor:
        _, relevance = attributor(x, attr_output=lambda out: out * onehot)
    return relevance


def _check(agent, td, n_logits):
    targets = {f"logit_{i}": ("logits", i) for i in range(n_logits)}
    explained = thr.Attributed(agent, LRP(EpsilonPlus()), inputs=["observation"], targets=targets)
    out = explained(td)
    trunk = agent.module[0].module
    head = agent.module[1].module[0].module
    policy = nn.Sequential(trunk, head)
    for i in range(n_logits):
        expected = _zennit(policy, td["observation"], i)
        actual = out["attribution", f"logit_{i}", "observation"]
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)
        assert actual.abs().sum() > 0


def test_connect_four_agent_matches_zennit():
    from tdhook_rl.agents.connect_four.model import load
    from tdhook_rl.envs.connect_four import ConnectFourEnv

    torch.manual_seed(0)
    env = ConnectFourEnv(batch_size=[6])
    td = env.rollout(5, break_when_any_done=False)[:, -1]["next"]  # boards with stones
    _check(load(), td, 7)


def test_breakout_agent_matches_zennit():
    from tdhook_rl.agents.breakout.model import make_agent

    td = TensorDict(observation=torch.rand(5, 4, 10, 10).round(), batch_size=[5])
    _check(make_agent(), td, 3)


def test_chess_move_head_is_not_covered():
    from tdhook_rl.agents.chess.model import make_agent

    with pytest.raises(ValueError, match=r"'module.1.module.0.module.bias' \(Embedding\)"):
        EpsilonPlus().plan(make_agent())
