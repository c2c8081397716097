"""Multi-agent logging (TorchRL's MARL layout, ``("agents", "observation")``): one scalar per
agent and feature, named ``agent<i>/<feature>``, or one per feature pooled over the agents on
request; checked the slow way on the rollout's attributions."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictSequential

from tdhook_rl.attribution import Saliency
from tdhook_rl.callbacks import AttributionSpec, InterpretabilityCallback, LogTo, Schedule
from tdhook_rl.targets import ActionLoc, Index

from test_multi_agent import N_AGENTS, OBS, OBS_KEY, LineSpread, mappo

NAMES = ["position", "mean", "left"]


def make_callback(tmp_path, **spec):
    actor, critic = mappo(share_params=False)
    heads = {f"policy {i}": ActionLoc(index=(i, 0)) for i in range(N_AGENTS)}
    heads["value"] = Index(("agents", "state_value"), (0, 0))
    return InterpretabilityCallback(
        LineSpread(),
        TensorDictSequential(actor, critic),
        AttributionSpec(heads, inputs=[OBS_KEY], method=Saliency(abs=False), **spec),
        schedule=Schedule(every_frames=10, eval_steps=24, max_overhead=None),
        log=LogTo("csv", log_dir=tmp_path, figures_every=1),
    )


def slow_shares(rollout, head):
    """Each (agent, feature)'s share of the mean |attribution| over steps: [agents, OBS]."""
    a = rollout["attribution", head, *OBS_KEY].abs()  # [T, agents, OBS]
    magnitude = torch.stack(
        [torch.stack([a[:, i, j].mean() for j in range(OBS)]) for i in range(N_AGENTS)]
    )
    return magnitude / magnitude.sum()


def test_scalars_are_named_per_agent_and_feature(tmp_path):
    callback = make_callback(tmp_path, feature_names=NAMES)
    scalars = callback(10)
    rollout = callback.last_rollout
    for head in ("policy 0", "policy 2", "value"):
        slug = head.replace(" ", "_")
        want = slow_shares(rollout, head)
        for i in range(N_AGENTS):
            for j, name in enumerate(NAMES):
                got = scalars[f"attribution/{slug}/agent{i}/{name}"]
                assert got == pytest.approx(float(want[i, j]), rel=1e-5, abs=1e-7)
        logged = [k for k in scalars if k.startswith(f"attribution/{slug}/")]
        assert len(logged) == N_AGENTS * OBS + 1  # and its rounding_level flag
    # agent 2's policy reads only agent 2's observation (decentralised MAPPO actor)
    assert sum(scalars[f"attribution/policy_2/agent2/{n}"] for n in NAMES) == pytest.approx(1.0)
    csv = tmp_path / "tdhook_rl" / "scalars" / "attribution" / "policy_1" / "agent1" / "left.csv"
    assert csv.read_text().startswith("10,")
    figures = sorted(p.name.split("_0")[0] for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["attribution_over_time", "feature_shares"]


def test_pooling_over_agents_gives_one_scalar_per_feature(tmp_path):
    callback = make_callback(tmp_path, feature_names=NAMES, pool_agents=True)
    scalars = callback(10)
    rollout = callback.last_rollout
    for head in ("policy 1", "value"):
        slug = head.replace(" ", "_")
        want = slow_shares(rollout, head).sum(0)  # summed over agents
        got = torch.tensor([scalars[f"attribution/{slug}/{n}"] for n in NAMES])
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-7)
        assert sorted(k for k in scalars if k.startswith(f"attribution/{slug}/")) == sorted(
            [f"attribution/{slug}/{n}" for n in NAMES] + [f"attribution/{slug}/rounding_level"]
        )


def test_feature_names_are_one_agents_features(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"feature_names do not fit input \('agents', 'observation'\) \(per-agent shape "
        r"\(3,\), 3 agents\): 9 feature names for an input of shape \(3,\)",
    ):
        make_callback(tmp_path, feature_names=[f"x{i}" for i in range(N_AGENTS * OBS)])
