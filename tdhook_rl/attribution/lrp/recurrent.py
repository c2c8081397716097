"""LRP through recurrent layers (``nn.LSTM``, ``nn.GRU``: TorchRL's ``LSTMModule`` and
``GRUModule`` call them), with the gate rule of Arras et al. 2017 ("Explaining recurrent
neural network predictions in sentiment analysis"): gates carry no relevance, relevance flows
through the signal.

LSTM, per layer and time step ``t`` (from the last step back):

* ``h_t = o_t * tanh(c_t)``: all of ``R(h_t)`` goes to ``c_t`` (the output gate ``o_t`` is a
  gate, ``tanh`` passes relevance through);
* ``c_t = f_t * c_{t-1} + i_t * g_t``: ``R(c_t)`` is split between the two terms by the
  epsilon rule on the sum (``z_k / (c_t + eps * sign(c_t)) * R(c_t)``); the term
  ``f_t * c_{t-1}`` passes all of its share to ``c_{t-1}``, ``i_t * g_t`` all of its share to
  ``g_t``;
* ``g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)``: relevance passes through the tanh and is
  distributed over ``x_t`` and ``h_{t-1}`` by the epsilon rule on the linear map (the bias
  and the stabilizer absorb their share, as zennit's ``Epsilon`` does).

GRU (``h_t = (1 - z_t) * n_t + z_t * h_{t-1}``, ``n_t = tanh(W_n x_t + b_in + r_t * (U_n
h_{t-1} + b_hn))``), the analogous choice: ``R(h_t)`` is split between ``(1 - z_t) * n_t``
(all to ``n_t``) and ``z_t * h_{t-1}`` (all to ``h_{t-1}``) by the epsilon rule on the sum;
``n_t``'s relevance passes the tanh and is distributed over ``x_t`` and ``h_{t-1}`` by the
epsilon rule on the pre-activation, the reset gate ``r_t`` acting as a fixed factor on the
recurrent contributions ``r_t * U_n[k, j] * h_{t-1, j}`` (the gates ``r``, ``z`` get none).

Several time steps of one call (a whole trajectory in recurrent mode) are unrolled: the
relevance of ``h_{t-1}`` and ``c_{t-1}`` flows on to step ``t - 1``. The state the call
*starts* from (the carried ``recurrent_state`` of a rollout step) is held fixed: its relevance
is dropped (``state=False``, the default), so one rollout step explains the step's input
given the memory, like the other methods' step-by-step attribution. With ``state=True`` it is
returned for the incoming ``(h, c)`` (or ``h``) too, so the relevance reaches the
``recurrent_state`` entries when they are attributed. Relevance arriving at the returned final
state ``(h_n, c_n)`` (targets that read the next state) is added to the last step's ``h`` and
``c`` of each layer. The gates are recomputed from the module's weights; multi-layer modules
are handled layer by layer; bidirectional modules, ``proj_size > 0`` and packed sequences are
refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tdhook_rl.attribution.lrp.rules import Rule

__all__ = ["GRURule", "LSTMRule", "stabilize"]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign(z)``, with ``sign(0) = 1`` (zennit's and Arras et al.'s choice).

    Examples:
        >>> stabilize(torch.tensor([-2.0, 0.0, 3.0]), 0.5)
        tensor([-2.5000,  0.5000,  3.5000])
    """
    return z + torch.where(z >= 0, epsilon, -epsilon)


class _RecurrentRule(Rule):
    """Shared input handling of :class:`LSTMRule` and :class:`GRURule`."""

    kind: type[nn.RNNBase] = nn.RNNBase
    n_states: int = 1

    def __init__(self, epsilon: float = 1e-6, state: bool = False) -> None:
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.epsilon, self.state = float(epsilon), bool(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epsilon={self.epsilon}, state={self.state})"

    def relevance(
        self,
        module: nn.Module,
        inputs: list[Tensor],
        outputs: list[Tensor],
        relevance_out: list[Tensor],
    ) -> list[Tensor | None]:
        rnn = self._checked(module, inputs)
        x = inputs[0]
        unbatched = x.ndim == 2
        # canonical layout: (N, T, features) and states (layers, N, H)
        seq = x.unsqueeze(0) if unbatched else (x if rnn.batch_first else x.transpose(0, 1))
        n = seq.shape[0]
        states = [s.unsqueeze(1) if unbatched else s for s in inputs[1:]]
        if not states:
            zero = seq.new_zeros(rnn.num_layers, n, rnn.hidden_size)
            states = [zero] * self.n_states
        r_y = relevance_out[0]
        # relevance tensors may carry a vmapped target dimension: only shape-agnostic ops
        r_y = (
            r_y.unsqueeze(-3) if unbatched else (r_y if rnn.batch_first else r_y.transpose(-3, -2))
        )
        r_final: list[Tensor | None] = [None] * self.n_states  # of (h_n, c_n), if any
        for k, r in enumerate(relevance_out[1 : 1 + self.n_states]):
            r_final[k] = None if r is None else (r.unsqueeze(-2) if unbatched else r)
        with torch.no_grad():
            layer_inputs = [seq]
            traces = []
            for layer in range(rnn.num_layers):
                trace = self._forward(rnn, layer, layer_inputs[-1], [s[layer] for s in states])
                traces.append(trace)
                layer_inputs.append(trace["h"][1:].transpose(0, 1))  # (N, T, H)
        r_in = r_y  # (N, T, H) relevance of the top layer's outputs
        r_states: list[list[Tensor]] = [[] for _ in range(self.n_states)]
        for layer in reversed(range(rnn.num_layers)):
            extra = [None if r is None else r[..., layer, :, :] for r in r_final]
            r_in, r_start = self._backward(rnn, layer, traces[layer], r_in, extra)
            for k, r in enumerate(r_start):
                r_states[k].insert(0, r)
        # back to the caller's layout
        r_x = (
            r_in.squeeze(-3) if unbatched else (r_in if rnn.batch_first else r_in.transpose(-3, -2))
        )
        out: list[Tensor | None] = [r_x]
        for k in range(len(inputs) - 1):
            if not self.state:
                out.append(None)
                continue
            r = torch.stack(r_states[k], -3)  # (layers, N, H)
            out.append(r.squeeze(-2) if unbatched else r)
        return out

    def _checked(self, module: nn.Module, inputs: Sequence[Tensor]) -> nn.RNNBase:
        if not isinstance(module, self.kind):
            raise TypeError(
                f"{type(self).__name__} explains {self.kind.__name__} modules, got a "
                f"{type(module).__name__}; map it to that module type in the composite"
            )
        if module.bidirectional or getattr(module, "proj_size", 0) > 0:
            raise ValueError(
                f"{type(self).__name__} supports unidirectional {self.kind.__name__}s without "
                "proj_size; this module is bidirectional or projects its hidden state"
            )
        x = inputs[0] if inputs else None
        if (
            x is None
            or len(inputs) not in (1, 1 + self.n_states)
            or x.ndim not in (2, 3)
            or x.shape[-1] != module.input_size
        ):
            got = [tuple(t.shape) for t in inputs]
            raise ValueError(
                f"{type(self).__name__} expects the {self.kind.__name__}'s input "
                f"(T, N, {module.input_size}) (batch_first: (N, T, {module.input_size})) and "
                f"optionally its {self.n_states} state tensor(s), got tensors of shapes {got} "
                "(packed sequences are not supported: pad them)"
            )
        return module

    def _forward(self, rnn, layer, seq, start) -> dict[str, Tensor]:
        raise NotImplementedError

    def _backward(self, rnn, layer, trace, r_out, extra) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError


def _weights(rnn: nn.RNNBase, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w_ih = getattr(rnn, f"weight_ih_l{layer}")
    w_hh = getattr(rnn, f"weight_hh_l{layer}")
    if rnn.bias:
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
    else:
        b_ih = b_hh = w_ih.new_zeros(w_ih.shape[0])
    return w_ih, w_hh, b_ih, b_hh


class LSTMRule(_RecurrentRule):
    """Arras et al. 2017's LSTM rule for ``nn.LSTM`` (see the module docstring).

    Args:
        epsilon: the stabilizer of the epsilon rule, at the cell sum and the signal's linear map.
        state: also return the relevance of the incoming ``(h_0, c_0)`` (default: dropped,
            the carried state is held fixed).

    Examples:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> lstm = nn.LSTM(3, 4, batch_first=True, bias=False)
        >>> x = torch.randn(2, 5, 3)
        >>> out, (h, c) = lstm(x)
        >>> r_y = torch.zeros_like(out)
        >>> r_y[:, -1] = out[:, -1]   # the last output's relevance is its value
        >>> r_x = LSTMRule(epsilon=1e-9).relevance(lstm, [x], [out, h, c], [r_y])[0]
        >>> r_x.shape   # per time step and input feature
        torch.Size([2, 5, 3])
        >>> # no bias, zero initial state: the relevance is conserved
        >>> torch.allclose(r_x.sum((1, 2)), r_y.sum((1, 2)), atol=1e-5)
        True
    """

    kind = nn.LSTM
    n_states = 2

    def _forward(self, rnn, layer, seq, start) -> dict[str, Tensor]:
        w_ih, w_hh, b_ih, b_hh = _weights(rnn, layer)
        h, c = start
        hs, cs, gates = [h], [c], []
        for t in range(seq.shape[1]):
            pre = seq[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (N, 4H): i, f, g, o
            i, f, g, o = pre.chunk(4, -1)
            i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
            pre_g, g = g, g.tanh()
            c = f * c + i * g
            h = o * c.tanh()
            hs.append(h)
            cs.append(c)
            gates.append(torch.stack([i, f, g, pre_g]))
        return {"x": seq, "h": torch.stack(hs), "c": torch.stack(cs), "gates": torch.stack(gates)}

    def _backward(self, rnn, layer, trace, r_out, extra) -> tuple[Tensor, list[Tensor]]:
        w_ih, w_hh, _, _ = _weights(rnn, layer)
        size = rnn.hidden_size
        w_x, w_h = w_ih[2 * size : 3 * size], w_hh[2 * size : 3 * size]  # the signal g's rows
        eps = self.epsilon
        x, hs, cs, gates = trace["x"], trace["h"], trace["c"], trace["gates"]
        steps = x.shape[1]
        r_extra_h, r_extra_c = extra
        r_h = r_out[..., steps - 1, :]
        if r_extra_h is not None:
            r_h = r_h + r_extra_h
        r_c = r_extra_c if r_extra_c is not None else None
        r_xs = []
        for t in reversed(range(steps)):
            i, f, g, pre_g = gates[t]
            c_prev, h_prev, c = cs[t], hs[t], cs[t + 1]
            r_c = r_h if r_c is None else r_c + r_h  # h_t = o * tanh(c_t): all to c_t
            share = r_c / stabilize(c, eps)
            r_c_prev = f * c_prev * share
            r_g = i * g * share  # i * g passes all to g, g = tanh(pre_g) passes through
            s = r_g / stabilize(pre_g, eps)
            r_xs.append(x[:, t] * (s @ w_x))
            r_h = h_prev * (s @ w_h)
            if t > 0:
                r_h = r_h + r_out[..., t - 1, :]
            r_c = r_c_prev
        return torch.stack(r_xs[::-1], -2), [r_h, r_c]


class GRURule(_RecurrentRule):
    """The analogous rule for ``nn.GRU`` (see the module docstring).

    Args:
        epsilon: the stabilizer of the epsilon rule, at the state sum and the candidate's
            pre-activation.
        state: also return the relevance of the incoming ``h_0`` (default: dropped).

    Examples:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> gru = nn.GRU(3, 4)
        >>> x = torch.randn(5, 2, 3)   # (T, N, features)
        >>> out, h = gru(x)
        >>> GRURule().relevance(gru, [x], [out, h], [out])[0].shape
        torch.Size([5, 2, 3])
    """

    kind = nn.GRU
    n_states = 1

    def _forward(self, rnn, layer, seq, start) -> dict[str, Tensor]:
        w_ih, w_hh, b_ih, b_hh = _weights(rnn, layer)
        (h,) = start
        hs, gates = [h], []
        for t in range(seq.shape[1]):
            gi = seq[:, t] @ w_ih.T + b_ih  # (N, 3H): r, z, n
            gh = h @ w_hh.T + b_hh
            ir, iz, in_ = gi.chunk(3, -1)
            hr, hz, hn = gh.chunk(3, -1)
            r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
            pre_n = in_ + r * hn
            n = pre_n.tanh()
            h = (1 - z) * n + z * h
            hs.append(h)
            gates.append(torch.stack([r, z, n, pre_n]))
        return {"x": seq, "h": torch.stack(hs), "gates": torch.stack(gates)}

    def _backward(self, rnn, layer, trace, r_out, extra) -> tuple[Tensor, list[Tensor]]:
        w_ih, w_hh, _, _ = _weights(rnn, layer)
        size = rnn.hidden_size
        w_x, w_h = w_ih[2 * size :], w_hh[2 * size :]  # the candidate n's rows
        eps = self.epsilon
        x, hs, gates = trace["x"], trace["h"], trace["gates"]
        steps = x.shape[1]
        (r_extra_h,) = extra
        r_h = r_out[..., steps - 1, :]
        if r_extra_h is not None:
            r_h = r_h + r_extra_h
        r_xs = []
        for t in reversed(range(steps)):
            r, z, n, pre_n = gates[t]
            h_prev, h = hs[t], hs[t + 1]
            share = r_h / stabilize(h, eps)
            r_n = (1 - z) * n * share  # (1 - z) * n passes all to n, tanh passes through
            r_kept = z * h_prev * share  # z * h_{t-1} passes all to h_{t-1}
            s = r_n / stabilize(pre_n, eps)
            r_xs.append(x[:, t] * (s @ w_x))
            r_h = r_kept + h_prev * ((r * s) @ w_h)
            if t > 0:
                r_h = r_h + r_out[..., t - 1, :]
        return torch.stack(r_xs[::-1], -2), [r_h]
