"""CAVs and TCAV: against captum's TCAV on the same model and activations, against a slow
per-sample gradient loop, the t-test against scipy, and the errors for bad input."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.concepts.tcav import (
    concept_activation_vector,
    directional_derivatives,
    t_test,
    tcav,
    tcav_scores,
)
from tdhook_rl.targets import ActionLogProb


def pendulum_mlp():
    """The shipped double-pendulum actor's MLP (observation -> loc) and its observations."""
    agent = agents.load("double_pendulum")
    mlp = agent.actor.module[0].module[0]  # Linear, Tanh, Linear, Tanh, Linear
    g = torch.Generator().manual_seed(0)
    return mlp, TensorDictModule(mlp, ["observation"], ["loc"]), torch.randn(300, 9, generator=g)


def test_cav_points_at_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    shift = torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    cav = concept_activation_vector(x[:200] + shift, x[200:])
    assert float(cav.vector[2]) > 0.95
    assert cav.vector.norm().item() == pytest.approx(1.0)
    assert cav.accuracy > 0.9


@pytest.mark.parametrize("shape", [(), (5,), (4, 3)], ids=str)
def test_directional_derivatives_match_a_slow_loop(shape):
    mlp, module, _ = pendulum_mlp()
    obs = torch.randn(*shape, 9)
    directions = torch.randn(3, 64)
    heads = {"loc": "loc", "loc^2": lambda td: td["loc"] ** 2}
    dd = directional_derivatives(module, TensorDict(observation=obs, batch_size=shape), "module.1",
                                 directions, heads)  # fmt: skip
    assert dd.shape == (2, *shape, 3)
    for i, x in enumerate(obs.reshape(-1, 9)):
        h = mlp[:2](x).detach().requires_grad_(True)
        loc = mlp[2:](h).squeeze()
        for j, value in enumerate((loc, loc**2)):
            (grad,) = torch.autograd.grad(value, h, retain_graph=True)
            torch.testing.assert_close(dd.reshape(2, -1, 3)[j, i], directions @ grad)


def test_scores_match_captums_tcav(tmp_path):
    from captum.concept import TCAV, Classifier, Concept

    mlp, module, obs = pendulum_mlp()
    concept_obs, random_obs, inputs = obs[:100] + 1.0, obs[100:200], obs[200:]
    trained = {}

    class OurCAV(Classifier):
        """captum's classifier slot filled by concept_activation_vector on captum's own
        activations: captum then scores with its layer gradients."""

        def __init__(self):
            self.ids, self.w = [], None

        def train_and_eval(self, dataloader, **kwargs):
            x, y = zip(*dataloader, strict=True)
            x, y = torch.cat(x), torch.cat(y)
            self.ids = y.unique().tolist()  # [concept id, random id] = [0, 1]
            cav = concept_activation_vector(x[y == self.ids[0]], x[y == self.ids[1]])
            trained["vector"] = cav.vector
            self.w = torch.stack([cav.vector, -cav.vector])
            return {"accs": cav.accuracy}

        def weights(self):
            return self.w

        def classes(self):
            return self.ids

    concept = Concept(0, "shifted", [concept_obs])
    random = Concept(1, "random", [random_obs])
    captum_tcav = TCAV(mlp, ["3"], classifier=OurCAV(), save_path=str(tmp_path))
    theirs = captum_tcav.interpret(inputs, [[concept, random]], target=0)["0-1"]["3"]

    acts = {name: thr.get(module, TensorDict(observation=x, batch_size=[100]), "module.3")
            for name, x in (("concept", concept_obs), ("random", random_obs))}  # fmt: skip
    cav = concept_activation_vector(acts["concept"], acts["random"])
    torch.testing.assert_close(cav.vector, trained["vector"])
    ours = tcav_scores(module, TensorDict(observation=inputs, batch_size=[100]), "module.3",
                       torch.stack([cav.vector, -cav.vector]), {"loc": "loc"})  # fmt: skip
    torch.testing.assert_close(ours[0].float(), theirs["sign_count"])


def test_a_concept_the_head_follows_is_significant():
    _, module, obs = pendulum_mlp()
    td = TensorDict(observation=obs, batch_size=[300])
    out = module(td.clone())
    acts = thr.get(module, td, "module.1")  # (300, 64)
    high = out["loc"].squeeze(-1).argsort(descending=True)[:60]  # where loc is largest
    g = torch.Generator().manual_seed(1)
    randoms = [acts[torch.randperm(300, generator=g)[:60]] for _ in range(6)]
    result = tcav(
        module, td, "module.1", acts[high], randoms, {"loc": "loc", "-loc": lambda t: -t["loc"]}
    )
    assert result.scores.shape == (2, 5) and result.random_scores.shape == (2, 5)
    assert float(result.scores[0].mean()) > 0.8  # moving towards the concept raises loc
    torch.testing.assert_close(result.scores[1], 1 - result.scores[0])
    assert bool(result.significant(0.05).all()), str(result)
    assert "p =" in str(result)


def test_tcav_runs_on_the_connect_four_agent():
    from tdhook_rl.envs.connect_four import ConnectFourEnv

    agent = agents.load("connect_four")
    states = ConnectFourEnv(batch_size=[4]).rollout(6, agent, break_when_any_done=False)
    states = states.select("observation", "action_mask")  # (4, 6) time-major
    heads = {"move": ActionLogProb(), "value": "state_value"}
    dd = directional_derivatives(agent, states, "module.0.module.mlp.3", torch.randn(2, 256), heads)
    assert dd.shape == (2, 4, 6, 2) and bool(dd.isfinite().all())


def test_t_test_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for shift in (0.0, 0.3, 1.5):
        a, b = torch.rand(7, generator=g), torch.rand(9, generator=g) + shift
        want = stats.ttest_ind(a.double().numpy(), b.double().numpy()).pvalue
        assert t_test(a, b) == pytest.approx(float(want), rel=1e-9, abs=1e-14)
    assert t_test(torch.ones(3), torch.zeros(3)) == 0.0


def test_bad_input_is_refused():
    _, module, obs = pendulum_mlp()
    td = TensorDict(observation=obs[:10], batch_size=[10])
    with pytest.raises(ValueError, match="too few concept examples: 2"):
        concept_activation_vector(torch.randn(2, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="differ in width: 4 vs 5"):
        concept_activation_vector(torch.randn(10, 4), torch.randn(10, 5))
    with pytest.raises(ValueError, match="at least 3 random sets"):
        tcav(module, td, "module.1", torch.randn(10, 64), [torch.randn(10, 64)] * 2, {"loc": "loc"})
    with pytest.raises(ValueError, match="has 64 units per sample but the directions have 8"):
        directional_derivatives(module, td, "module.1", torch.randn(8), {"loc": "loc"})
    with pytest.raises(TypeError, match="TCAV needs a submodule"):
        directional_derivatives(module, td, "loc", torch.randn(1), {"loc": "loc"})
