"""Multi-agent TorchRL (the MARL layout: an ``"agents"`` sub-TensorDict whose last batch
dimension is the agent, ``MultiAgentMLP`` networks): per-agent targets in ``env.rollout``
against captum, recording, and interventions on every agent's network."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CIntegratedGradients
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type
from torchrl.modules import MultiAgentMLP, ProbabilisticActor, TanhNormal

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.callbacks import (
    AttributionSpec,
    InterpretabilityCallback,
    Interventions,
    LogTo,
    ProbeSpec,
    Schedule,
)
from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.interventions import Ablate, Patch
from tdhook_rl.targets import ActionLogProb, Index

N_AGENTS, OBS, HIDDEN = 3, 3, 16
OBS_KEY = ("agents", "observation")


class LineSpread(EnvBase):
    """Agents on a line, each moving by its action in [-1, 1] and rewarded for nearing the
    origin; an agent observes its position, the group's mean position and the time left."""

    def __init__(self, max_steps: int = 12) -> None:
        super().__init__(batch_size=[])
        self.max_steps = max_steps
        agents = (N_AGENTS,)
        self.observation_spec = Composite(
            agents=Composite(observation=Unbounded((*agents, OBS)), shape=agents),
            step=Unbounded((1,)),
        )
        self.action_spec = Composite(
            agents=Composite(action=Bounded(-1.0, 1.0, (*agents, 1)), shape=agents)
        )
        self.reward_spec = Composite(agents=Composite(reward=Unbounded((*agents, 1)), shape=agents))
        self.done_spec = Composite(
            done=Categorical(2, (1,), dtype=torch.bool),
            terminated=Categorical(2, (1,), dtype=torch.bool),
        )
        self.position = torch.zeros(N_AGENTS)
        self.steps = 0
        self.rng = torch.Generator().manual_seed(0)

    def _observe(self) -> TensorDict:
        mean = self.position.mean().expand(N_AGENTS)
        left = torch.full((N_AGENTS,), 1 - self.steps / self.max_steps)
        observation = torch.stack([self.position, mean, left], -1)
        done = torch.tensor([self.steps >= self.max_steps])
        return TensorDict(
            agents=TensorDict(observation=observation, batch_size=[N_AGENTS]),
            step=torch.tensor([float(self.steps)]),
            done=done,
            terminated=done.clone(),
        )

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        self.position = torch.rand(N_AGENTS, generator=self.rng) * 4 - 2
        self.steps = 0
        return self._observe()

    def _step(self, tensordict: TensorDict) -> TensorDict:
        self.position = self.position + tensordict["agents", "action"].squeeze(-1)
        self.steps += 1
        out = self._observe()
        out["agents", "reward"] = -self.position.abs().unsqueeze(-1)
        return out

    def _set_seed(self, seed: int | None) -> None:
        self.rng = torch.Generator().manual_seed(seed or 0)


def mappo(share_params: bool) -> tuple[ProbabilisticActor, TensorDictModule]:
    """TorchRL's MAPPO layout: decentralised per-agent policies, a centralised critic."""
    torch.manual_seed(0)

    def mlp(n_out: int, centralized: bool) -> MultiAgentMLP:
        return MultiAgentMLP(
            OBS,
            n_out,
            N_AGENTS,
            centralized=centralized,
            share_params=share_params,
            depth=2,
            num_cells=HIDDEN,
        )

    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(mlp(2, centralized=False), NormalParamExtractor()),
            [OBS_KEY],
            [("agents", "loc"), ("agents", "scale")],
        ),
        in_keys=[("agents", "loc"), ("agents", "scale")],
        out_keys=[("agents", "action")],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    critic = TensorDictModule(mlp(1, centralized=True), [OBS_KEY], [("agents", "state_value")])
    return actor, critic


def targets() -> dict:
    out = {f"policy {i}": ActionLogProb(index=i) for i in range(N_AGENTS)}
    out["policy"] = ActionLogProb()
    out |= {f"value {i}": Index(("agents", "state_value"), (i, 0)) for i in range(N_AGENTS)}
    return out


def agents_td(observation: torch.Tensor) -> TensorDict:
    batch = observation.shape[:-2]
    return TensorDict(
        agents=TensorDict(observation=observation, batch_size=[*batch, N_AGENTS]),
        batch_size=batch,
    )


@pytest.mark.parametrize("share_params", [True, False])
def test_per_agent_targets_in_a_rollout_match_captum(share_params):
    env = LineSpread()
    check_env_specs(env, seed=0)
    actor, critic = mappo(share_params)
    actor_critic = TensorDictSequential(actor, critic)
    env.set_seed(0)
    plain = env.rollout(12, actor_critic)
    explained = thr.Attributed(
        actor_critic, IntegratedGradients(n_steps=16), inputs=[OBS_KEY], targets=targets()
    )
    env.set_seed(0)
    rollout = env.rollout(12, explained)
    assert torch.equal(plain["agents", "action"], rollout["agents", "action"])

    obs, action = rollout[OBS_KEY], rollout["agents", "action"]  # [T, N, OBS], [T, N, 1]
    steps = obs.shape[0]

    def log_prob(x, agent):  # captum stacks the path points along the batch
        k = x.shape[0] // steps
        dist = actor.get_dist(agents_td(x))
        lp = dist.log_prob(action.repeat(k, 1, 1))  # [k * T, N]
        return lp.sum(-1) if agent is None else lp[:, agent]

    def value(x, agent):
        return critic(agents_td(x))["agents", "state_value"][:, agent, 0]

    ig = CIntegratedGradients(lambda x, head, agent: head(x, agent))
    for i in [*range(N_AGENTS), None]:
        name = "policy" if i is None else f"policy {i}"
        want = ig.attribute(obs, additional_forward_args=(log_prob, i), n_steps=16)
        got = rollout["attribution", name, OBS_KEY]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    per_agent = sum(rollout["attribution", f"policy {i}", OBS_KEY] for i in range(N_AGENTS))
    torch.testing.assert_close(per_agent, rollout["attribution", "policy", OBS_KEY])
    for i in range(N_AGENTS):
        want = ig.attribute(obs, additional_forward_args=(value, i), n_steps=16)
        got = rollout["attribution", f"value {i}", OBS_KEY]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        # decentralised policy: agent i's action depends on its own observation only
        others = [j for j in range(N_AGENTS) if j != i]
        assert rollout["attribution", f"policy {i}", OBS_KEY][:, others].abs().max() < 1e-6
    # the centralised critic reads every agent's observation
    assert rollout["attribution", "value 0", OBS_KEY][:, 1:].abs().max() > 1e-4


def test_action_log_prob_index_errors():
    actor, _ = mappo(share_params=True)
    td = agents_td(torch.randn(4, N_AGENTS, OBS))
    explained = thr.Attributed(
        actor, "saliency", inputs=[OBS_KEY], targets={"p": ActionLogProb(index=N_AGENTS)}
    )
    with pytest.raises(IndexError, match="outside"):
        explained(td)
    with pytest.raises(TypeError, match="int"):
        ActionLogProb(index=1.5)
    assert repr(ActionLogProb(index=2)) == "ActionLogProb(index=2)"


def manual_hidden(mlp: MultiAgentMLP, observation: torch.Tensor, agent: int) -> torch.Tensor:
    """Agent ``agent``'s first hidden layer (after its activation), computed by hand."""
    params = mlp.params if mlp.share_params else mlp.params[agent]
    first = params["0"]
    return torch.tanh(observation[:, agent] @ first["weight"].T + first["bias"])


@pytest.mark.parametrize("share_params", [True, False])
def test_recorded_per_agent_activations(share_params):
    """With share_params=False each agent's network runs under torch.vmap: the recording is
    still [*batch, n_agents, hidden], agent i's slice being agent i's own layer."""
    actor, _ = mappo(share_params)
    mlp = actor.module[0].module[0]
    recorded = thr.Recorded(actor, {"h1": "module.0.module.0._empty_net.1"})
    obs = torch.randn(5, N_AGENTS, OBS)
    out = recorded(agents_td(obs))
    hidden = out["activations", "h1"]
    assert hidden.shape == (5, N_AGENTS, HIDDEN)
    assert not torch._C._functorch.is_batchedtensor(hidden)
    for agent in range(N_AGENTS):
        torch.testing.assert_close(hidden[:, agent], manual_hidden(mlp, obs, agent))


@pytest.mark.parametrize("share_params", [True, False])
def test_recorded_in_a_multi_agent_rollout(share_params):
    env = LineSpread()
    actor, critic = mappo(share_params)
    sites = {
        "actor h1": "module.0.module.0.module.0._empty_net.1",
        "critic h1": "module.1.module._empty_net.1",
    }
    recorded = thr.Recorded(TensorDictSequential(actor, critic), sites, packed=True)
    env.set_seed(0)
    rollout = recorded.unpack(env.rollout(12, recorded))
    obs = rollout[OBS_KEY]
    actor_h1 = rollout["activations", "actor h1"]
    assert actor_h1.shape == (12, N_AGENTS, HIDDEN)
    for agent in range(N_AGENTS):
        torch.testing.assert_close(actor_h1[:, agent], manual_hidden(mlp_of(actor), obs, agent))
    # the centralised critic: with shared parameters one hidden vector for all agents (the
    # network runs once on every observation), else one per agent
    critic_mlp = critic.module
    critic_h1 = rollout["activations", "critic h1"]
    flat = obs.reshape(12, -1)
    if share_params:
        assert critic_h1.shape == (12, HIDDEN)
        want = torch.tanh(
            flat @ critic_mlp.params["0", "weight"].T + critic_mlp.params["0", "bias"]
        )
        torch.testing.assert_close(critic_h1, want)
    else:
        assert critic_h1.shape == (12, N_AGENTS, HIDDEN)
        for agent in range(N_AGENTS):
            first = critic_mlp.params[agent]["0"]
            want = torch.tanh(flat @ first["weight"].T + first["bias"])
            torch.testing.assert_close(critic_h1[:, agent], want)


def mlp_of(actor: ProbabilisticActor) -> MultiAgentMLP:
    return actor.module[0].module[0]


class _TwiceVmapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(torch.vmap(self.inner))(x)


def test_recorded_refuses_a_site_inside_nested_vmaps():
    module = TensorDictModule(_TwiceVmapped(), ["x"], ["y"])
    recorded = thr.Recorded(module, {"inner": "module.inner"})
    with pytest.raises(ValueError, match="nested"):
        recorded(TensorDict(x=torch.randn(4, 3, 2), batch_size=[4]))


def test_patching_inside_the_per_agent_vmap_says_why_it_cannot():
    actor, _ = mappo(share_params=False)
    site = "module.0.module.0._empty_net.1"
    clean = thr.Recorded(actor, {site: site})(agents_td(torch.randn(5, N_AGENTS, OBS)))
    patched = thr.Intervened(actor, {site: Patch(clean)})
    with pytest.raises(ValueError, match="vmap"):
        patched(agents_td(torch.randn(5, N_AGENTS, OBS)))


@pytest.mark.parametrize("share_params", [True, False])
def test_ablation_reaches_every_agents_network(share_params):
    actor, _ = mappo(share_params)
    mlp = actor.module[0].module[0]
    units = [0, 3, 5]
    ablated = thr.Intervened(actor, {"module.0.module.0._empty_net.1": Ablate(units=units)})
    obs = torch.randn(5, N_AGENTS, OBS)
    got = ablated(agents_td(obs))["agents", "loc"]
    for agent in range(N_AGENTS):
        params = mlp.params if share_params else mlp.params[agent]
        h = manual_hidden(mlp, obs, agent)
        h[:, units] = 0
        h = torch.tanh(h @ params["2", "weight"].T + params["2", "bias"])
        loc = (h @ params["4", "weight"].T + params["4", "bias"])[:, :1]
        torch.testing.assert_close(got[:, agent], loc)


def team_return(env: LineSpread, policy, seed: int) -> float:
    """An episode's return averaged over the agents, the slow way."""
    env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(100, policy)
    per_agent = rollout["next", "agents", "reward"].squeeze(-1).sum(0)  # [N]
    return float(per_agent.mean())


def test_callback_and_intervention_effect_on_a_multi_agent_env(tmp_path):
    env = LineSpread()
    actor, critic = mappo(share_params=False)
    actor_critic = TensorDictSequential(actor, critic)
    site = "module.0.module.0._empty_net.1"
    callback = InterpretabilityCallback(
        env,
        actor_critic,
        AttributionSpec(targets(), inputs=[OBS_KEY]),
        # four episodes (probes hold some out)
        schedule=Schedule(every_frames=100, eval_steps=4 * env.max_steps, max_overhead=None),
        probes=ProbeSpec(
            {"h1": f"module.0.{site}"}, {"position 0": ((*OBS_KEY,), (0, 0))}, held_out=0.5
        ),
        interventions=Interventions({"ablate h1": {f"module.0.{site}": Ablate()}}, episodes=3),
        log=LogTo("csv", log_dir=tmp_path),
    )
    env.set_seed(7)
    scalars = callback(100)
    rollout = callback.last_rollout
    # four episodes of max_steps: the return is the agents' mean return, per episode
    want = float(rollout["next", "agents", "reward"].squeeze(-1).sum(0).mean()) / 4
    assert scalars["eval/return"] == pytest.approx(want)
    assert scalars["eval/episode_length"] == env.max_steps
    for head in ("policy_0", "value_2"):  # one scalar per agent and feature
        shares = [
            scalars[f"attribution/{head}/agent{a}/f{i}"]
            for a in range(N_AGENTS)
            for i in range(OBS)
        ]
        assert sum(shares) == pytest.approx(1.0)
    # agent 1's policy reads only agent 1's observation
    assert sum(scalars[f"attribution/policy_1/agent1/f{i}"] for i in range(OBS)) == pytest.approx(
        1.0
    )
    assert "probe/h1/position_0/r2" in scalars
    figures = sorted(p.name.split("_0")[0] for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["attribution_over_time", "feature_shares", "probe_r2"]

    effect = intervention_effect(env, actor, {site: Ablate()}, episodes=3, seed=0)
    clean = [team_return(env, actor, seed) for seed in range(3)]
    ablated = thr.Intervened(actor, {site: Ablate()})
    changed = [team_return(env, ablated, seed) for seed in range(3)]
    assert effect.summary["returns"]["clean"] == pytest.approx(sum(clean) / 3)
    assert effect.summary["returns"]["intervened"] == pytest.approx(sum(changed) / 3)
    assert effect.summary["returns"]["change"] != 0


def test_per_agent_probes_pool_every_agent_against_its_own_state():
    env = LineSpread()
    actor, critic = mappo(share_params=False)
    sites = {
        "actor h1": "module.0.module.0.module.0._empty_net.1",  # per agent
        "critic h1": "module.1.module._empty_net.1",  # per agent (unshared, centralised)
    }
    recorded = thr.Recorded(TensorDictSequential(actor, critic), sites)
    env.set_seed(0)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        rollout = torch.stack([env.rollout(12, recorded) for _ in range(8)])  # [8, 12]
    per_agent = thr.probes.agents_as_copies(rollout)
    assert per_agent.batch_size == (8, N_AGENTS, 12)
    for agent in range(N_AGENTS):  # agent i's slice is agent i's own data
        torch.testing.assert_close(
            per_agent["activations", "actor h1"][:, agent],
            rollout["activations", "actor h1"][:, :, agent],
        )
        torch.testing.assert_close(
            per_agent["observation"][:, agent], rollout[OBS_KEY][:, :, agent]
        )
        torch.testing.assert_close(
            per_agent["next", "reward"][:, agent], rollout["next", "agents", "reward"][:, :, agent]
        )
        assert torch.equal(per_agent["next", "done"][:, agent], rollout["next", "done"])
    # each agent's own position, read from its own hidden layer (the actor's first layer is
    # an affine map of its observation through tanh): near-perfect held-out R^2, pooled
    results = thr.probes.fit_probes(per_agent, ["actor h1"], {"own position": ("observation", 0)})
    row = results.rows[0]
    assert row["n_train"] + row["n_test"] == 8 * N_AGENTS * 12
    assert row["r2"] > 0.95
    with pytest.raises(KeyError, match="multi-agent layout"):
        thr.probes.agents_as_copies(rollout, group="nobody")
