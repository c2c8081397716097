"""The recurrent LRP rules (Arras et al. 2017) against a slow, from-the-paper implementation:
explicit loops over time steps and units in float64, the relevance of each product and linear
map written as the paper's ``lrp_linear`` (``R_i = sum_j w_ij x_i / (z_j + eps sign z_j) R_j``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tdhook_rl.attribution.lrp.recurrent import GRURule, LSTMRule

EPS = 1e-3


def sign(z: float) -> float:
    return 1.0 if z >= 0 else -1.0


def lrp_linear(x: list[float], w: list[list[float]], z: list[float], r: list[float]) -> list[float]:
    """The paper's rule for ``z_j = sum_i w[i][j] x_i + b_j``: ``R_i = sum_j w_ij x_i / (z_j +
    eps sign(z_j)) R_j`` (the bias and the stabilizer keep the rest)."""
    out = [0.0] * len(x)
    for i in range(len(x)):
        for j in range(len(z)):
            out[i] += w[i][j] * x[i] / (z[j] + EPS * sign(z[j])) * r[j]
    return out


def products(a: list[float], z: list[float], r: list[float]) -> list[float]:
    """``lrp_linear`` of one term ``a_k`` of an element-wise sum ``z_k`` (identity weights)."""
    return [a[k] / (z[k] + EPS * sign(z[k])) * r[k] for k in range(len(z))]


def sig(v: float) -> float:
    return 1.0 / (1.0 + torch.exp(torch.tensor(-v, dtype=torch.float64)).item())


def tanh(v: float) -> float:
    return torch.tanh(torch.tensor(v, dtype=torch.float64)).item()


def affine(w: torch.Tensor, b: torch.Tensor, x: list[float], rows: range) -> list[float]:
    return [sum(w[k, i].item() * x[i] for i in range(len(x))) + b[k].item() for k in rows]


def slow_lstm_layer(lstm, layer, xs, h0, c0, r_out, r_hn, r_cn):
    """One sample, one layer: lists over time of lists over units."""
    w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
    b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
    size = lstm.hidden_size
    hs, cs, gates = [h0], [c0], []
    for x in xs:  # the forward pass, unit by unit
        h = hs[-1]
        pre = [
            a + c
            for a, c in zip(
                affine(w_ih, b, x, range(4 * size)),
                affine(w_hh, torch.zeros(4 * size), h, range(4 * size)),
                strict=True,
            )
        ]
        i = [sig(v) for v in pre[:size]]
        f = [sig(v) for v in pre[size : 2 * size]]
        pre_g = pre[2 * size : 3 * size]
        g = [tanh(v) for v in pre_g]
        o = [sig(v) for v in pre[3 * size :]]
        c = [f[k] * cs[-1][k] + i[k] * g[k] for k in range(size)]
        hs.append([o[k] * tanh(c[k]) for k in range(size)])
        cs.append(c)
        gates.append((i, f, g, pre_g))
    wx = [[w_ih[2 * size + j, i].item() for j in range(size)] for i in range(len(xs[0]))]
    wh = [[w_hh[2 * size + j, i].item() for j in range(size)] for i in range(size)]
    steps = len(xs)
    r_h = [r_out[-1][k] + r_hn[k] for k in range(size)]
    r_c = list(r_cn)
    r_x = [None] * steps
    for t in reversed(range(steps)):
        i, f, g, pre_g = gates[t]
        r_c = [r_c[k] + r_h[k] for k in range(size)]  # h = o * tanh(c): all to c
        c = cs[t + 1]
        r_c_prev = products([f[k] * cs[t][k] for k in range(size)], c, r_c)
        r_g = products([i[k] * g[k] for k in range(size)], c, r_c)
        r_x[t] = lrp_linear(xs[t], wx, pre_g, r_g)
        r_h = lrp_linear(hs[t], wh, pre_g, r_g)
        if t > 0:
            r_h = [r_h[k] + r_out[t - 1][k] for k in range(size)]
        r_c = r_c_prev
    return r_x, r_h, r_c


def slow_gru_layer(gru, layer, xs, h0, r_out, r_hn):
    w_ih, w_hh = getattr(gru, f"weight_ih_l{layer}"), getattr(gru, f"weight_hh_l{layer}")
    b_ih, b_hh = getattr(gru, f"bias_ih_l{layer}"), getattr(gru, f"bias_hh_l{layer}")
    size = gru.hidden_size
    hs, gates = [h0], []
    for x in xs:
        h = hs[-1]
        gi = affine(w_ih, b_ih, x, range(3 * size))
        gh = affine(w_hh, b_hh, h, range(3 * size))
        r = [sig(gi[k] + gh[k]) for k in range(size)]
        z = [sig(gi[size + k] + gh[size + k]) for k in range(size)]
        pre_n = [gi[2 * size + k] + r[k] * gh[2 * size + k] for k in range(size)]
        n = [tanh(v) for v in pre_n]
        hs.append([(1 - z[k]) * n[k] + z[k] * h[k] for k in range(size)])
        gates.append((r, z, n, pre_n))
    steps = len(xs)
    r_h = [r_out[-1][k] + r_hn[k] for k in range(size)]
    r_x = [None] * steps
    for t in reversed(range(steps)):
        r, z, n, pre_n = gates[t]
        h, h_prev = hs[t + 1], hs[t]
        r_n = products([(1 - z[k]) * n[k] for k in range(size)], h, r_h)
        r_kept = products([z[k] * h_prev[k] for k in range(size)], h, r_h)
        wx = [[w_ih[2 * size + j, i].item() for j in range(size)] for i in range(len(xs[0]))]
        # the reset gate scales the recurrent contributions: weights r_j * U_ji
        wh = [[r[j] * w_hh[2 * size + j, i].item() for j in range(size)] for i in range(size)]
        r_x[t] = lrp_linear(xs[t], wx, pre_n, r_n)
        r_rec = lrp_linear(h_prev, wh, pre_n, r_n)
        r_h = [r_kept[k] + r_rec[k] for k in range(size)]
        if t > 0:
            r_h = [r_h[k] + r_out[t - 1][k] for k in range(size)]
    return r_x, r_h


def slow(rnn, x, states, r_out, r_final):
    """The whole (multi-layer) module, batch_first tensors in, tensors out."""
    lstm = isinstance(rnn, nn.LSTM)
    n, steps, _ = x.shape
    r_x = torch.zeros_like(x)
    r_states = [torch.zeros_like(s) for s in states]
    for b in range(n):
        inputs = [x[b, t].tolist() for t in range(steps)]
        layer_inputs, start = [inputs], []
        for layer in range(rnn.num_layers):  # forward, to get every layer's inputs
            with torch.no_grad():
                single = nn.LSTM if lstm else nn.GRU
                one = single(
                    rnn.input_size if layer == 0 else rnn.hidden_size,
                    rnn.hidden_size,
                    batch_first=True,
                ).double()
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(one, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{layer}"))
                seq = torch.tensor(layer_inputs[-1], dtype=torch.float64)[None]
                hx = tuple(s[layer : layer + 1, b : b + 1] for s in states)
                out = one(seq, hx if lstm else hx[0])[0][0]
            layer_inputs.append(out.tolist())
            start.append([s[layer, b].tolist() for s in states])
        r = [r_out[b, t].tolist() for t in range(steps)]
        for layer in reversed(range(rnn.num_layers)):
            finals = [rf[layer, b].tolist() for rf in r_final]
            if lstm:
                r, r_h, r_c = slow_lstm_layer(
                    rnn, layer, layer_inputs[layer], *start[layer], r, *finals
                )
                r_states[1][layer, b] = torch.tensor(r_c)
            else:
                r, r_h = slow_gru_layer(rnn, layer, layer_inputs[layer], *start[layer], r, *finals)
            r_states[0][layer, b] = torch.tensor(r_h)
        r_x[b] = torch.tensor(r)
    return r_x, r_states


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
def test_rule_matches_the_slow_definition(kind, num_layers, batch_first):
    torch.manual_seed(0)
    cls, rule_cls = (nn.LSTM, LSTMRule) if kind == "lstm" else (nn.GRU, GRURule)
    rnn = cls(3, 4, num_layers=num_layers, batch_first=batch_first).double()
    n, steps = 2, 3
    x = torch.randn(n, steps, 3, dtype=torch.float64)
    states = [
        torch.randn(num_layers, n, 4, dtype=torch.float64)
        for _ in range(2 if kind == "lstm" else 1)
    ]
    r_out = torch.randn(n, steps, 4, dtype=torch.float64)
    r_final = [torch.randn(num_layers, n, 4, dtype=torch.float64) for _ in states]
    want_x, want_states = slow(rnn, x, states, r_out, r_final)

    x_in = x if batch_first else x.transpose(0, 1)
    r_in = r_out if batch_first else r_out.transpose(0, 1)
    hx = tuple(states) if kind == "lstm" else states[0]
    outputs = [rnn(x_in, hx)[0], *(rnn(x_in, hx)[1] if kind == "lstm" else [rnn(x_in, hx)[1]])]
    got = rule_cls(epsilon=EPS, state=True).relevance(
        rnn, [x_in, *states], outputs, [r_in, *r_final]
    )
    got_x = got[0] if batch_first else got[0].transpose(0, 1)
    torch.testing.assert_close(got_x, want_x)
    for g, w in zip(got[1:], want_states, strict=True):
        torch.testing.assert_close(g, w)
    # the default holds the carried state fixed: its relevance is dropped
    dropped = rule_cls(epsilon=EPS).relevance(rnn, [x_in, *states], outputs, [r_in, *r_final])
    assert all(r is None for r in dropped[1:])
    torch.testing.assert_close(dropped[0], got[0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_relevance_is_conserved_without_bias(kind):
    """Bias-free, epsilon -> 0: every step of the rule conserves relevance (the gate products
    pass all of it on, the sums and linear maps split it exactly), so the relevance of the
    outputs and final state equals that of the inputs and the initial state."""
    torch.manual_seed(1)
    cls, rule_cls = (nn.LSTM, LSTMRule) if kind == "lstm" else (nn.GRU, GRURule)
    rnn = cls(3, 5, num_layers=2, bias=False, batch_first=True).double()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    states = [torch.randn(2, 4, 5, dtype=torch.float64) for _ in range(2 if kind == "lstm" else 1)]
    out = rnn(x, tuple(states) if kind == "lstm" else states[0])
    outputs = [out[0], *(out[1] if kind == "lstm" else [out[1]])]
    r_out = [torch.randn_like(o) for o in outputs]
    got = rule_cls(epsilon=0.0, state=True).relevance(rnn, [x, *states], outputs, r_out)
    total_out = r_out[0].sum((1, 2)) + sum(r.sum((0, 2)) for r in r_out[1:])
    total_in = got[0].sum((1, 2)) + sum(r.sum((0, 2)) for r in got[1:])
    torch.testing.assert_close(total_in, total_out)


def test_unbatched_input_and_bad_modules():
    torch.manual_seed(2)
    lstm = nn.LSTM(3, 4)
    x = torch.randn(5, 3)  # (T, features), no batch
    out, (h, c) = lstm(x)
    r = LSTMRule().relevance(lstm, [x], [out, h, c], [out])
    batched = LSTMRule().relevance(lstm, [x[:, None]], [out[:, None]], [out[:, None]])
    torch.testing.assert_close(r[0], batched[0][:, 0])
    with pytest.raises(ValueError, match="bidirectional"):
        LSTMRule().relevance(nn.LSTM(3, 4, bidirectional=True), [x], [], [])
    with pytest.raises(TypeError, match="explains LSTM modules, got a GRU"):
        LSTMRule().relevance(nn.GRU(3, 4), [x], [], [])
    with pytest.raises(ValueError, match=r"expects the LSTM's input \(T, N, 3\)"):
        LSTMRule().relevance(lstm, [torch.randn(5, 2)], [], [])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lrp_of_a_recurrent_policy_inside_env_rollout(kind):
    """LRP(...) with the recurrent rule inside ``env.rollout`` of a recurrent Q-policy (TorchRL's
    LSTMModule/GRUModule on CartPole, as in tests/test_recurrent.py): every step's relevance
    is the slow definition's for that step's input, the carried state held fixed."""
    gym = pytest.importorskip("torchrl.envs.libs.gym")
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.envs import InitTracker, TransformedEnv
    from torchrl.modules import GRUModule, LSTMModule, QValueModule

    import tdhook_rl as thr
    from tdhook_rl.attribution.lrp import LRP, Epsilon, EpsilonPlus
    from tdhook_rl.targets import ActionValue

    torch.manual_seed(0)
    cls = LSTMModule if kind == "lstm" else GRUModule
    memory = cls(input_size=4, hidden_size=6, in_key="observation", out_key="embed")
    env = TransformedEnv(gym.GymEnv("CartPole-v1"), InitTracker())
    env.append_transform(memory.make_tensordict_primer())
    head = nn.Linear(6, 2)
    policy = TensorDictSequential(
        memory,
        TensorDictModule(head, ["embed"], ["action_value"]),
        QValueModule(spec=env.action_spec),
    )
    rule = LSTMRule(EPS) if kind == "lstm" else GRURule(EPS)
    rnn_type = nn.LSTM if kind == "lstm" else nn.GRU
    composite = EpsilonPlus(rules={rnn_type: rule, nn.Linear: Epsilon(EPS)})
    explained = thr.Attributed(
        policy, LRP(composite), inputs=["observation"], targets={"q": ActionValue()}
    )
    env.set_seed(0)
    plain = env.rollout(15, policy)
    env.set_seed(0)
    rollout = env.rollout(15, explained)
    assert torch.equal(plain["action"], rollout["action"])  # the policy acts as before
    got = rollout["attribution", "q", "observation"]
    keys = ("recurrent_state_h", "recurrent_state_c") if kind == "lstm" else ("recurrent_state",)
    rnn = memory.lstm if kind == "lstm" else memory.gru
    with torch.no_grad():
        fresh = rollout["is_init"][:, None]  # (T, 1, 1): the module starts from zeros there
        states = [torch.where(fresh, 0.0, rollout[k]).transpose(0, 1).double() for k in keys]
        x = rollout["observation"][:, None].double()  # (T, 1, 4): each step its own sample
        rnn64, head64 = copy.deepcopy(rnn).double(), copy.deepcopy(head).double()
        embed = rnn64(x, tuple(states) if kind == "lstm" else states[0])[0][:, -1]  # (T, 6)
        q = head64(embed)
        taken = rollout["action"].double()  # one-hot
        r_q = taken * (q * taken).sum(-1, keepdim=True)  # the target's relevance at the head
        r_embed = embed * ((r_q / (q + torch.where(q >= 0, EPS, -EPS))) @ head64.weight)
        want, _ = slow(rnn64, x, states, r_embed[:, None], [torch.zeros_like(s) for s in states])
    torch.testing.assert_close(got.double(), want[:, 0], rtol=1e-4, atol=1e-6)
    assert got.abs().sum() > 0


def test_the_default_composite_explains_lstm_and_gru_with_the_recurrent_rules():
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule

    import tdhook_rl as thr
    from tdhook_rl.attribution.lrp import LRP, EpsilonPlus

    torch.manual_seed(3)
    x = torch.randn(5, 7, 3)  # (batch, time, features)
    for rnn, rule in ((nn.LSTM(3, 4, batch_first=True), LSTMRule()),
                      (nn.GRU(3, 4, batch_first=True), GRURule())):  # fmt: skip
        net = TensorDictModule(nn.Sequential(_Last(rnn), nn.Linear(4, 2)), ["obs"], ["out"])
        ruled = {path: type(r) for path, _, r in EpsilonPlus().plan(net).rules}
        assert ruled["module.0.rnn"] is type(rule)
        results = []
        for composite in (EpsilonPlus(), EpsilonPlus(rules={type(rnn): rule})):
            explained = thr.Attributed(
                net, LRP(composite), inputs=["obs"], targets={"a": ("out", 0), "b": ("out", 1)}
            )
            results.append(explained(TensorDict(obs=x, batch_size=[5]))["attribution"])
        for head in ("a", "b"):
            assert results[0][head, "obs"].abs().sum() > 0
            torch.testing.assert_close(results[0][head, "obs"], results[1][head, "obs"])


class _Last(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0][:, -1]
