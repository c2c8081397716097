"""The standard composites, the by-name / by-position / by-type mappers, batch-norm merging
and hidden sites against zennit 0.5.1; the epsilon rule against captum; conservation."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import MLP
from zennit_loader import load_zennit

import tdhook_rl as thr
from tdhook_rl.attribution.lrp import (
    LRP,
    At,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    Flat,
    Gamma,
    LayerNormRule,
    ZBox,
    ZPlus,
)

zennit = load_zennit()
zc, zr = zennit.composites, zennit.rules
N_OUT = 5


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, N_OUT)
    )


def _conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 8), nn.ReLU(), nn.Linear(8, N_OUT),
    )  # fmt: skip


NETS = {"mlp": (_mlp, (6,)), "conv": (_conv, (3, 7, 7))}
COMPOSITES = {
    "epsilon_plus": (lambda: EpsilonPlus(1e-4), lambda: zc.EpsilonPlus(1e-4)),
    "epsilon_gamma_box": (
        lambda: EpsilonGammaBox(-3.0, 3.0),
        lambda: zc.EpsilonGammaBox(-3.0, 3.0),
    ),
    "epsilon_alpha2_beta1": (EpsilonAlpha2Beta1, zc.EpsilonAlpha2Beta1),
    "epsilon_plus_flat": (EpsilonPlusFlat, zc.EpsilonPlusFlat),
}


def _zennit(net, x, composite, target, canonizers=None):
    onehot = torch.zeros(net(x).shape)
    onehot[:, target] = 1.0
    with zennit.attribution.Gradient(net, composite) as attributor:
        _, relevance = attributor(x, attr_output=lambda out: out * onehot)
    return relevance


def _ours(net, x, method, n_out=N_OUT, inputs=("observation",)):
    policy = TensorDictModule(net, ["observation"], ["logits"])
    targets = {f"t{i}": ("logits", i) for i in range(n_out)}  # every target in one pass
    explained = thr.Attributed(policy, method, inputs=list(inputs), targets=targets)
    return explained(TensorDict(observation=x, batch_size=x.shape[:1]))


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("name", list(COMPOSITES))
def test_standard_composite_matches_zennit(net_name, name):
    make, shape = NETS[net_name]
    net = make().eval()
    x = torch.randn(4, *shape)
    ours, theirs = COMPOSITES[name]
    out = _ours(net, x, LRP(ours()))
    for t in range(N_OUT):
        expected = _zennit(net, x, theirs(), t)
        torch.testing.assert_close(
            out["attribution", f"t{t}", "observation"], expected, rtol=1e-4, atol=1e-6
        )


def test_by_name_position_and_type_match_zennit():
    net = _conv().eval()
    x = torch.randn(3, 3, 7, 7)
    ours = Composite(
        {
            "module.2": Gamma(0.5),
            0: ZBox(-3.0, 3.0),
            -1: Epsilon(0.0),
            nn.Linear: Flat(),
            nn.Conv2d: ZPlus(),
        }
    )
    names = [(("2",), zr.Gamma(0.5)), (("0",), zr.ZBox(-3.0, 3.0)), (("7",), zr.Epsilon(0.0))]
    types = [((nn.ReLU,), zr.Pass()), ((nn.Linear,), zr.Flat()), ((nn.Conv2d,), zr.ZPlus())]
    theirs = zc.MixedComposite([zc.NameMapComposite(names), zc.LayerMapComposite(types)])
    out = _ours(net, x, LRP(ours))
    for t in range(N_OUT):
        torch.testing.assert_close(
            out["attribution", f"t{t}", "observation"],
            _zennit(net, x, theirs, t),
            rtol=1e-4,
            atol=1e-6,
        )


def test_positions_count_the_chosen_types():
    net = _conv()
    plan = Composite({At(0, (nn.Linear,)): Flat(), nn.Linear: Epsilon(), nn.Conv2d: ZPlus()}).plan(
        net
    )
    assert [p for p, _, r in plan.rules if isinstance(r, Flat)] == ["5"]


def test_batch_norm_merged_like_zennit_and_module_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 6),
        nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, N_OUT),
    )  # fmt: skip
    for bn in (net[1], net[5]):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 3, 7, 7)
    out = _ours(net, x, LRP(EpsilonPlus()))
    canon = [zennit.canonizers.SequentialMergeBatchNorm()]
    for t in range(N_OUT):
        expected = _zennit(net, x, zc.EpsilonPlus(canonizers=canon), t)
        torch.testing.assert_close(
            out["attribution", f"t{t}", "observation"], expected, rtol=1e-4, atol=1e-6
        )
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_torchrl_mlp_batch_norm_across_dropout():
    """TorchRL's MLP puts Dropout between Linear and BatchNorm: still merged."""
    net = MLP(in_features=6, out_features=N_OUT, num_cells=[8, 8], dropout=0.1,
              norm_class=nn.BatchNorm1d, norm_kwargs=[{"num_features": 8}] * 2)  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(4, 6)
    out = _ours(net, x, LRP(EpsilonPlus()))
    canon = [zennit.canonizers.NamedMergeBatchNorm([(("0",), "2"), (("4",), "6")])]
    theirs = zc.EpsilonPlus(canonizers=canon)
    for t in range(N_OUT):
        expected = _zennit(net, x, theirs, t)
        torch.testing.assert_close(
            out["attribution", f"t{t}", "observation"], expected, rtol=1e-4, atol=1e-6
        )


def test_hidden_site_relevance_matches_zennit_at_that_layer():
    net = _mlp().eval()
    x = torch.randn(4, 6)
    out = _ours(net, x, LRP(EpsilonPlus()), inputs=["module.1"])
    for t in range(N_OUT):
        seen = {}

        def keep(module, args, output, seen=seen):
            output.register_hook(lambda grad: seen.setdefault("grad", grad))

        handle = net[1].register_forward_hook(keep)
        try:
            relevance = _zennit(net, x, zc.EpsilonPlus(), t)
        finally:
            handle.remove()
        torch.testing.assert_close(
            out["attribution", f"t{t}", "module.1"], seen["grad"], rtol=1e-4, atol=1e-6
        )
        assert relevance.abs().sum() > 0 and seen["grad"].abs().sum() > 0


def test_epsilon_matches_captum_lrp():
    from captum.attr import LRP as CaptumLRP

    net = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, N_OUT)
    ).eval()
    x = torch.randn(4, 6)
    out = _ours(net, x, LRP(Composite({nn.Linear: Epsilon(1e-9)})))
    for t in range(N_OUT):
        expected = CaptumLRP(net).attribute(x.clone(), target=t)
        torch.testing.assert_close(
            out["attribution", f"t{t}", "observation"], expected, rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize("rule", [Epsilon(1e-9), ZPlus(1e-9)], ids=["epsilon", "zplus"])
def test_conservation_for_bias_free_nets(rule):
    net = nn.Sequential(
        nn.Linear(6, 16, bias=False), nn.ReLU(), nn.Linear(16, 16, bias=False), nn.ReLU(),
        nn.Linear(16, N_OUT, bias=False),
    ).eval()  # fmt: skip
    x = torch.rand(8, 6)  # positive inputs: z+ is conservative there too
    out = _ours(net, x, LRP(Composite({nn.Linear: rule})))
    logits = out["logits"]
    for t in range(N_OUT):
        total = out["attribution", f"t{t}", "observation"].sum(-1)
        active = logits[:, t].abs() > 1e-3  # a zero output distributes nothing
        torch.testing.assert_close(total[active], logits[active, t], rtol=1e-4, atol=1e-5)
        assert out["attribution", f"t{t}", "completeness_delta"][active].abs().max() < 1e-4


def test_layer_norm_rule_against_the_slow_ln_rule():
    torch.manual_seed(3)
    net = MLP(in_features=6, out_features=N_OUT, num_cells=[8], norm_class=nn.LayerNorm,
              norm_kwargs={"normalized_shape": 8}, activation_class=nn.Tanh)  # fmt: skip
    net[1].weight.data.uniform_(0.5, 1.5)
    net[1].bias.data.uniform_(-0.3, 0.3)
    x = torch.randn(4, 6)
    out = _ours(
        net, x, LRP(Composite({nn.Linear: Epsilon(1e-6), nn.LayerNorm: LayerNormRule(1e-6)}))
    )
    lin0, ln, lin1 = net[0], net[1], net[3]
    for t in range(N_OUT):  # the slow way, layer by layer: std detached, then epsilon
        h0 = lin0(x)
        a0 = ln(h0)
        a1 = torch.tanh(a0)
        y = lin1(a1)
        r_y = torch.zeros_like(y)
        r_y[:, t] = y[:, t]
        r_a1 = a1 * ((r_y / (y + 1e-6 * torch.where(y >= 0, 1.0, -1.0))) @ lin1.weight)
        leaf = h0.detach().requires_grad_()
        std = (leaf.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt().detach()
        lin_map = (leaf - leaf.mean(-1, keepdim=True)) / std * ln.weight + ln.bias
        s = r_a1 / (lin_map + 1e-6 * torch.where(lin_map >= 0, 1.0, -1.0))
        r_h0 = leaf * torch.autograd.grad(lin_map, leaf, s.detach())[0]
        r_x = x * ((r_h0 / (h0 + 1e-6 * torch.where(h0 >= 0, 1.0, -1.0))) @ lin0.weight)
        torch.testing.assert_close(
            out["attribution", f"t{t}", "observation"], r_x.detach(), rtol=1e-4, atol=1e-6
        )


def test_normal_param_extractor_splits_relevance_back():
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4), NormalParamExtractor()).eval()
    policy = TensorDictModule(net, ["observation"], ["loc", "scale"])
    x = torch.randn(3, 6)
    targets = {"loc0": ("loc", 0), "loc1": ("loc", 1), "scale1": ("scale", 1)}
    explained = thr.Attributed(policy, LRP(EpsilonPlus()), inputs=["observation"], targets=targets)
    out = explained(TensorDict(observation=x, batch_size=[3]))
    mlp = net[:3]
    loc = _zennit(mlp, x, zc.EpsilonPlus(), 1)
    torch.testing.assert_close(out["attribution", "loc1", "observation"], loc, rtol=1e-4, atol=1e-6)
    # the scale's softplus is passed through: its relevance is that of raw column 3, scaled
    # by the scale over the raw value (the top relevance is the scale itself)
    raw = mlp(x)[:, 3:4].detach()
    expected = _zennit(mlp, x, zc.EpsilonPlus(), 3) * out["scale"][:, 1:2] / raw
    torch.testing.assert_close(
        out["attribution", "scale1", "observation"], expected, rtol=1e-4, atol=1e-5
    )


def test_epsilon_matches_tdhook_lrp():
    """tdhook 0.3's LRP (epsilon on dense layers, pass on Tanh), one target per row."""
    tdhook_lrp = pytest.importorskip("tdhook.attribution").LRP
    from tdhook.attribution.lrp_helpers.rules import EpsilonRule, PassRule

    net = nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, N_OUT)
    ).eval()
    x = torch.randn(4, 6)

    def rule(name, module):
        if isinstance(module, nn.Linear):
            return EpsilonRule(1e-6)
        return PassRule() if isinstance(module, nn.Tanh) else None

    def select(outputs, extra):
        score = outputs["logits"].gather(-1, extra["target_index"][..., None]).squeeze(-1)
        return TensorDict(score=score, batch_size=outputs.batch_size)

    method = tdhook_lrp(
        init_attr_targets=select,
        init_attr_grads=lambda scores, extra: scores.detach(),  # top relevance: the value
        additional_init_keys=["target_index"],
        rule_mapper=rule,
        skip_modules=tdhook_lrp.default_skip,
    )
    policy = TensorDictModule(net, ["observation"], ["logits"])
    expanded = x.expand(N_OUT, *x.shape)
    index = torch.arange(N_OUT)[:, None].expand(expanded.shape[:2])
    with method.prepare(policy) as hooked:
        data = TensorDict(observation=expanded, target_index=index, batch_size=expanded.shape[:2])
        expected = hooked(data)["attr", "observation"]
    out = _ours(net, x, LRP(EpsilonPlus()))
    actual = torch.stack([out["attribution", f"t{t}", "observation"] for t in range(N_OUT)])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)
