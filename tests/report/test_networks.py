"""``--network module:callable``: the network is built by the user's code and the checkpoint's
weights end up in it; every problem is one line."""

from __future__ import annotations

import pytest
import torch

from tdhook_rl.agents.double_pendulum import model as pendulum
from tdhook_rl.report.networks import NetworkError, import_callable, load_network


def separate_pair():
    """A user's separate actor and critic, narrower than the shipped ones."""
    return pendulum.build_actor((32, 32)), pendulum.build_critic((32, 32))


def not_a_network():
    return "a string"


def test_connect_four_weights_are_loaded(tmp_path):
    from tdhook_rl.agents.connect_four import make_agent

    torch.manual_seed(3)
    trained = make_agent()
    path = tmp_path / "c4.pt"
    torch.save({"config": {}, "state_dict": trained.state_dict()}, path)
    net = load_network("connect_four", "tdhook_rl.agents.connect_four:make_agent", path)
    torch.testing.assert_close(net.state_dict(), trained.state_dict(), rtol=0, atol=0)
    assert not net.training
    torch.save(trained.state_dict(), path)  # a bare state dict works too
    net = load_network("connect_four", "tdhook_rl.agents.connect_four:make_agent", path)
    torch.testing.assert_close(net.state_dict(), trained.state_dict(), rtol=0, atol=0)


def test_double_pendulum_pair_with_its_observation_statistics(tmp_path):
    actor, critic = separate_pair()
    norm = {"loc": torch.randn(9), "scale": torch.rand(9) + 0.5, "clip": 5.0}
    path = tmp_path / "pair.pt"
    torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(), "obs_norm": norm}, path)
    agent = load_network("double_pendulum", "test_networks:separate_pair", path)
    torch.testing.assert_close(agent.actor.state_dict(), actor.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(agent.critic.state_dict(), critic.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(agent.obs_norm["loc"], norm["loc"])
    assert agent.obs_norm["clip"] == 5.0
    assert agent.actor_critic.module[0] is agent.actor


@pytest.mark.parametrize(
    ("saved", "spec", "message"),
    [
        ({"actor_critic": {}}, "test_networks:separate_pair", "has no 'actor' entry"),
        (None, "test_networks:separate_pair", "has no 'obs_norm' entry"),
        ({}, "test_networks:not_a_network", "returned a str; for the double pendulum"),
    ],
)
def test_double_pendulum_problems(tmp_path, saved, spec, message):
    if saved is None:
        actor, critic = separate_pair()
        saved = {"actor": actor.state_dict(), "critic": critic.state_dict()}
    path = tmp_path / "bad.pt"
    torch.save(saved, path)
    with pytest.raises(NetworkError, match=message) as info:
        load_network("double_pendulum", spec, path)
    assert len(str(info.value).splitlines()) == 1


def test_import_callable_follows_dotted_names():
    build = import_callable("tdhook_rl.agents.double_pendulum.model:DoublePendulumAgent.make_env")
    assert build is pendulum.DoublePendulumAgent.make_env
