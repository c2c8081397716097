"""Bad input gets a clear error naming the key or argument and the fix; the model is untouched."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, SmoothGrad
from tdhook_rl.targets import Index

from models import OBS, actor_critic_mlp


def obs_td(batch=(3,)):
    return TensorDict(observation=torch.randn(*batch, OBS), batch_size=batch)


def attributed(**kwargs):
    args = {"method": "ig", "inputs": ["observation"], "targets": {"value": "state_value"}}
    args.update(kwargs)
    return thr.Attributed(actor_critic_mlp(), args.pop("method"), **args)


def test_missing_input_key_at_call():
    explained = attributed()
    with pytest.raises(KeyError, match=r"input 'observation' is not in the TensorDict"):
        explained(TensorDict(obs=torch.randn(3, OBS), batch_size=[3]))


def test_input_not_read_by_module():
    with pytest.raises(ValueError, match=r"input 'pixels' is neither an entry the module reads"):
        attributed(inputs=["pixels"])


def test_missing_target_key():
    explained = attributed(targets={"v": "value"})
    with pytest.raises(
        KeyError,
        match=r"target 'v' reads key 'value', which is missing; the TensorDict holds \[.*"
        r"'state_value'\]",
    ):
        explained(obs_td())


def test_non_scalar_target_says_use_index():
    explained = attributed(targets={"policy": "logits"})
    with pytest.raises(
        ValueError, match=r"target 'policy'.*one scalar per sample.*Index\('logits', i\)"
    ):
        explained(obs_td())


def test_index_out_of_range():
    explained = attributed(targets={"policy": Index("logits", 9)})
    with pytest.raises(
        IndexError, match=r"target 'policy': index \(9,\) is out of range.*shape \(4,\) of 'logits'"
    ):
        explained(obs_td())


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_boolean_input_says_use_a_float_encoding(dtype):
    module = TensorDictModule(torch.nn.Linear(OBS, 1), ["board"], ["state_value"])
    explained = thr.Attributed(module, "saliency", inputs=["board"], targets={"v": "state_value"})
    board = torch.ones(2, OBS, dtype=dtype)
    with pytest.raises(TypeError, match=r"input 'board' has dtype .*Attribute a float encoding"):
        explained(TensorDict(board=board, batch_size=[2]))


@pytest.mark.parametrize("n_steps", [1, 0, 2.5])
def test_n_steps_below_two(n_steps):
    with pytest.raises(ValueError, match=r"n_steps must be an integer >= 2"):
        IntegratedGradients(n_steps=n_steps)


def test_unknown_rule():
    with pytest.raises(ValueError, match=r"unknown integration rule 'simpson'"):
        IntegratedGradients(rule="simpson")


@pytest.mark.parametrize("baseline", [torch.zeros(4), torch.zeros(2, OBS)])
def test_baseline_of_the_wrong_shape(baseline):
    explained = attributed(method=IntegratedGradients(baseline=baseline))
    with pytest.raises(ValueError, match=r"baseline for input 'observation' has shape"):
        explained(obs_td())


def test_baseline_key_missing():
    explained = attributed(method=IntegratedGradients(baseline="reference_obs"))
    with pytest.raises(KeyError, match=r"baseline key 'reference_obs'"):
        explained(obs_td())


def test_unknown_method_name():
    with pytest.raises(ValueError, match=r"unknown attribution method 'deeplift'.*known names"):
        attributed(method="deeplift")


def test_method_class_instead_of_instance():
    with pytest.raises(TypeError, match=r"pass an instance, e.g. IntegratedGradients\(\)"):
        attributed(method=IntegratedGradients)


def test_bad_smoothgrad_arguments():
    with pytest.raises(ValueError, match="n_samples"):
        SmoothGrad(n_samples=0)
    with pytest.raises(ValueError, match="stdev"):
        SmoothGrad(stdev=-1.0)
    with pytest.raises(ValueError, match="unknown SmoothGrad kind"):
        SmoothGrad(kind="mean")


def test_empty_or_bad_targets_and_inputs():
    with pytest.raises(ValueError, match="targets is empty"):
        attributed(targets={})
    with pytest.raises(TypeError, match="target names must be non-empty strings"):
        attributed(targets={1: "state_value"})
    with pytest.raises(ValueError, match="inputs is empty"):
        attributed(inputs=[])
    with pytest.raises(ValueError, match="strategy must be one of"):
        attributed(strategy="vmap")


def test_wrapping_a_plain_module_says_how():
    with pytest.raises(TypeError, match=r"Wrap a plain nn.Module first: TensorDictModule"):
        thr.Attributed(torch.nn.Linear(3, 1), "ig", inputs=["x"], targets={"y": "y"})


def test_errors_leave_the_model_untouched():
    explained = attributed(targets={"policy": "logits"})
    module = explained.wrapped
    before = {k: v.clone() for k, v in module.state_dict().items()}
    td = obs_td()
    with pytest.raises(ValueError):
        explained(td)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
    assert not td["observation"].requires_grad


def test_index_out_of_range_among_several_index_targets():
    targets = {"a": Index("logits", 0), "b": Index("logits", 1), "c": Index("logits", 11)}
    explained = attributed(targets=targets)
    with pytest.raises(IndexError, match=r"target 'c': index \(11,\) is out of range"):
        explained(obs_td())


@pytest.mark.parametrize(
    "method",
    [
        IntegratedGradients(baseline={"obsrvation": 1.0}),
        SmoothGrad(IntegratedGradients(baseline={"obsrvation": 1.0})),
    ],
    ids=["ig", "smoothgrad(ig)"],
)
def test_a_baseline_for_a_key_that_is_not_an_input_is_refused_at_construction(method):
    with pytest.raises(
        ValueError,
        match=r"baseline mapping names 'obsrvation', which is not an input; the inputs are "
        r"\['observation'\]",
    ):
        attributed(method=method)


def test_a_baseline_mapping_key_is_normalized():
    td = obs_td()
    nested = attributed(method=IntegratedGradients(baseline={("observation",): 1.0}))(td.clone())
    plain = attributed(method=IntegratedGradients(baseline=1.0))(td.clone())
    torch.testing.assert_close(nested["attribution"], plain["attribution"])


@pytest.mark.parametrize(
    ("out_key", "collides_with"),
    [
        ("state_value", "state_value"),  # written by the module: results would go inside it
        ("observation", "observation"),  # read by the module
        (("logits", "x"), "logits"),  # inside an entry the module writes
    ],
)
def test_an_out_key_that_collides_with_the_module_is_refused_at_construction(
    out_key, collides_with
):
    with pytest.raises(
        ValueError, match=rf"out_key .* collides with '{collides_with}', which the module reads"
    ):
        attributed(out_key=out_key)


def test_an_out_key_beside_the_module_keys_is_fine():
    out = attributed(out_key=("explain", "ig"))(obs_td())
    assert out["explain", "ig", "value", "observation"].shape == (3, OBS)
