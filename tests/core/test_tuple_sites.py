"""Sites inside a tuple output (an LSTM's ``(out, (h, c))``), named ``"lstm[1][0]"``: one
element is attributed, recorded and intervened on, checked against the same tensor exposed
through an identity module right after the LSTM (a plain site, checked against captum
elsewhere)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients, Saliency
from tdhook_rl.core.sites import ModuleSite, resolve_site, site_name
from tdhook_rl.interventions import Ablate


class _Net(nn.Module):
    """An LSTM over a short sequence; a head on its last output (the whole output passed
    through ``tap``) and on the cell state ``c``."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.tap = nn.Identity()
        self.head = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (_, c) = self.lstm(x)
        return self.head(torch.cat([self.tap(out)[:, -1], c[0]], -1))


@pytest.fixture
def policy() -> TensorDictModule:
    torch.manual_seed(0)
    return TensorDictModule(_Net(), ["observation"], ["logits"])


def _batch(n: int = 6) -> TensorDict:
    x = torch.randn(n, 4, 3, generator=torch.Generator().manual_seed(1))
    return TensorDict(observation=x, batch_size=[n])


def test_element_sites_are_parsed_and_named(policy):
    site = resolve_site(policy, "module.lstm[1][0]")
    assert site == ModuleSite("module.lstm", element=(1, 0))
    assert site_name(site) == "module.lstm[1][0]"
    with pytest.raises(TypeError, match="tuple of ints"):
        ModuleSite("module.lstm", element=("h",))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", [Saliency(abs=False), IntegratedGradients(n_steps=8)])
def test_attribution_to_one_element_equals_the_same_tensor_at_a_plain_site(policy, method):
    targets = {"a": ("logits", 0), "b": ("logits", 1)}
    element = thr.Attributed(policy, method, inputs=["module.lstm[0]"], targets=targets)
    plain = thr.Attributed(policy, method, inputs=["module.tap"], targets=targets)
    got, want = element(_batch()), plain(_batch())
    for head in targets:
        a = got["attribution", head, "module.lstm[0]"]  # the output sequence (batch, 4, 5)
        b = want["attribution", head, "module.tap"]
        assert a.shape == (6, 4, 5) and a.abs().sum() > 0
        torch.testing.assert_close(a, b)


def test_recorded_and_intervened_see_only_that_element(policy):
    td = _batch()
    with torch.no_grad():
        out, (_, c) = policy.module.lstm(td["observation"])
    recorded = thr.Recorded(policy, {"out": "module.lstm[0]"})(td)
    torch.testing.assert_close(recorded["activations", "out"], out)
    # the cell state is (layers, batch, hidden): intervened on, though not batch-first
    ablated = thr.Intervened(policy, {"module.lstm[1][1]": Ablate()})(_batch())
    with torch.no_grad():
        expected = policy.module.head(torch.cat([out[:, -1], torch.zeros_like(c[0])], -1))
    torch.testing.assert_close(ablated["logits"], expected)


def test_a_missing_element_is_named(policy):
    with pytest.raises(ValueError, match=r"LSTM gives \(Tensor, \(Tensor, Tensor\)\).*\(1, 2\)"):
        thr.Recorded(policy, {"x": "module.lstm[1][2]"})(_batch())
