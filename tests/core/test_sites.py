"""Sites: one naming scheme, resolution by path, key and type, errors that list what exists."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from tdhook_rl.core.sites import (
    KeySite,
    ModuleSite,
    TypeSite,
    of_type,
    resolve_site,
    resolve_sites,
    site_name,
)

from models import actor_critic_mlp


def test_one_name_per_site():
    assert site_name("module.0.module.1") == "module.0.module.1"
    assert site_name(ModuleSite("module.1", io="input")) == "module.1:input"
    assert site_name(("agents", "hidden")) == "agents.hidden"
    assert site_name(KeySite(("agents", "hidden"))) == "agents.hidden"
    with pytest.raises(TypeError, match="several sites"):
        site_name(of_type(nn.Tanh))


def test_of_type_selects_every_match_under_a_path_in_module_order():
    module = actor_critic_mlp()
    actor_tanh = resolve_sites(module, of_type(nn.Tanh, under="module.0"))
    assert actor_tanh == {
        "module.0.module.1": ModuleSite("module.0.module.1"),
        "module.0.module.3": ModuleSite("module.0.module.3"),
    }
    critic_linear = resolve_sites(module, TypeSite(nn.Linear, under="module.1", io="input"))
    assert list(critic_linear) == [f"module.1.module.{i}:input" for i in (0, 2, 4)]
    both = resolve_sites(module, of_type(nn.Tanh, nn.Linear))
    # a slow reference: walk named_modules by hand
    want = [n for n, m in module.named_modules() if type(m) in (nn.Tanh, nn.Linear)]
    assert list(both) == want


def test_mapping_names_and_mixed_lists():
    module = actor_critic_mlp()
    named = resolve_sites(module, {"act": of_type(nn.Tanh, under="module.1"), "v": "state_value"})
    assert list(named) == ["act/module.1.module.1", "act/module.1.module.3", "v"]
    assert named["v"] == KeySite("state_value")
    mixed = resolve_sites(module, ["module.0.module.0", of_type(nn.Tanh, under="module.0")])
    assert list(mixed) == ["module.0.module.0", "module.0.module.1", "module.0.module.3"]
    one = resolve_sites(module, ModuleSite("module.0.module.0", io="input"))
    assert list(one) == ["module.0.module.0:input"]


def test_errors_say_what_exists():
    module = actor_critic_mlp()
    with pytest.raises(ValueError, match=r"no submodule of type \['ReLU'\].*'Tanh'"):
        resolve_sites(module, of_type(nn.ReLU, under="module.0"))
    with pytest.raises(ValueError, match=r"site 'module.7'.*nearest valid sites"):
        resolve_sites(module, of_type(nn.Tanh, under="module.7"))
    with pytest.raises(TypeError, match=r"nn\.Module subclasses"):
        of_type(torch.tanh)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="io must be"):
        of_type(nn.Tanh, io="grad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"two sites are named 'module\.0\.module\.1'"):
        resolve_sites(module, ["module.0.module.1", of_type(nn.Tanh, under="module.0")])
    with pytest.raises(TypeError, match="resolve_sites"):
        resolve_site(module, of_type(nn.Tanh))
    with pytest.raises(TypeError, match="site names must be non-empty strings"):
        resolve_sites(module, {"": "module.0.module.1"})


def test_nested_key_sites():
    inner = TensorDictModule(nn.Linear(2, 3), ["x"], [("agents", "h")])
    outer = TensorDictModule(nn.Linear(3, 1), [("agents", "h")], ["y"])
    module = TensorDictSequential(inner, outer)
    assert resolve_sites(module, [("agents", "h")]) == {"agents.h": KeySite(("agents", "h"))}
