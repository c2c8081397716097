"""The batched multi-target gradient engine shared by every attribution method.

One call of :meth:`GradientEngine.gradients` runs the wrapped module once on a batch of input
values and returns the gradient of *every* target with respect to *every* input, per sample.
Three strategies, none with a Python loop over targets:

* ``"reverse"``: one forward, one backward batched over one-hot cotangents
  (``is_grads_batched``): cost grows with the number of targets;
* ``"forward"``: forward-mode AD vmapped over one-hot tangents, one per input feature: cost
  grows with the number of input features, so it wins when there are fewer features than
  targets (e.g. 9 observation entries, 17 heads);
* ``"replicate"``: the batch is replicated once per target and one plain backward runs (more
  forward work; for modules whose backward has no vmap batching rule).

``"auto"`` (the default) is decided by the engine at each :meth:`GradientEngine.gradients`
call: forward mode when the inputs have fewer features than there are targets and the module
supports it (a failed first try falls back to reverse mode, and is remembered), else reverse.
Empty batches (``(0,)``, ``(3, 0)``) run the module on an empty batch and give empty results.

Per-sample gradients come from differentiating the sum over the batch: this assumes samples do
not interact inside the module (true for MLPs, conv nets and normalization layers in eval
mode; false for batch norm in training mode).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Literal, cast

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type
from torch import nn

from tdhook_rl.attribution.hidden import (
    HiddenSite,
    captured,
    checked_activation,
    hidden_site,
    replacing,
)
from tdhook_rl.core.intercept import intercepting
from tdhook_rl.targets import Target, per_sample

Strategy = Literal["reverse", "forward", "replicate"]
STRATEGIES: tuple[str, ...] = ("reverse", "forward", "replicate")


class GradientEngine:
    """Evaluates targets and their input gradients for batches of input values.

    The engine owns its strategy: with ``strategy="auto"`` each :meth:`gradients` call takes
    forward mode when the inputs have fewer features than there are targets, else reverse
    mode; a module without forward-mode support (e.g. TanhNormal's custom tanh) falls back to
    reverse mode once, and the engines made from this one by :meth:`at` and :meth:`expand`
    remember it.

    Args:
        module: the wrapped TensorDict module.
        targets: bound targets, in output order.
        strategy: ``"auto"``, ``"reverse"``, ``"forward"`` or ``"replicate"`` (see the module
            docstring).
        context: the module's other inputs (everything but the attributed entries), with the
            caller's batch shape; grad-free tensors. Set per batch with :meth:`at`.
        reference: entries of the original forward that targets read (the taken action).
        inner_shape: batch dimensions that belong *inside* a sample (the time dimension of
            trajectories that a recurrent module reads whole): ``context`` and ``reference``
            are batched over the samples only, their entries carry ``inner_shape`` after the
            sample dimensions, and the module is called with it restored to its batch.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from tdhook_rl.targets import as_targets
        >>> net = TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"])
        >>> engine = GradientEngine(net, as_targets({"a": ("logits", 0), "b": ("logits", 1)}))
        >>> batch = engine.at(TensorDict(batch_size=[4]), TensorDict(batch_size=[4]))
        >>> batch.gradients({"observation": torch.randn(4, 3)})["observation"].shape
        torch.Size([2, 4, 3])
    """

    def __init__(
        self,
        module: TensorDictModuleBase,
        targets: Mapping[str, Target],
        strategy: Strategy | Literal["auto"] = "auto",
        *,
        context: TensorDictBase | None = None,
        reference: TensorDictBase | None = None,
        inner_shape: tuple[int, ...] = (),
    ) -> None:
        if strategy not in (*STRATEGIES, "auto"):
            raise ValueError(f"strategy must be one of {[*STRATEGIES, 'auto']}, got {strategy!r}")
        self.module = module
        self.targets = dict(targets)
        self.strategy = strategy
        self._context = context
        self.reference = reference if reference is not None else TensorDict()
        self.inner_shape = torch.Size(inner_shape)
        # shared by the engines made with at() and expand(): does the module support
        # forward mode? None until "auto" has tried it
        self._support: dict[str, bool | None] = {"forward": None}
        # hidden sites that targets read (Neuron): {key the target reads: site}
        self._observed: dict[NestedKey, HiddenSite] = {}
        for target in self.targets.values():
            site = getattr(target, "observed_site", None)
            if site is not None:
                key = target.observed_key  # type: ignore[attr-defined]
                self._observed[key] = hidden_site(module, target.observed_name, site)  # type: ignore[attr-defined]

    def at(
        self,
        context: TensorDictBase,
        reference: TensorDictBase,
        inner_shape: tuple[int, ...] = (),
    ) -> GradientEngine:
        """This engine on one batch: ``context`` and ``reference`` as in the class docstring."""
        return self._copy(context, reference, inner_shape)

    def _copy(self, context, reference, inner_shape) -> GradientEngine:
        engine = copy.copy(self)
        engine._context, engine.reference = context, reference
        engine.inner_shape = torch.Size(inner_shape)
        return engine  # engine._support is the same dict

    @property
    def forward_supported(self) -> bool | None:
        """Whether forward mode worked through the module (``None``: not tried yet)."""
        return self._support["forward"]

    @property
    def context(self) -> TensorDictBase:
        if self._context is None:
            raise RuntimeError("this engine has no batch yet: use engine.at(context, reference)")
        return self._context

    @property
    def batch_shape(self) -> torch.Size:
        return self.context.batch_size

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def expand(self, *lead: int) -> GradientEngine:
        """An engine whose batch is ``(*lead, *batch_shape)`` (context and reference expanded)."""
        shape = (*lead, *self.batch_shape)
        return self._copy(
            self.context.expand(shape), self.reference.expand(shape), self.inner_shape
        )

    def evaluate(
        self, values: Mapping[NestedKey, torch.Tensor], lead: tuple[int, ...]
    ) -> torch.Tensor:
        """Target values at ``values``.

        Args:
            values: input entries, each ``(*lead, *batch, *feature)``.
            lead: the leading dimensions in front of the batch.

        Returns:
            ``(n_targets, *lead, *batch)``.
        """
        shape = torch.Size((*lead, *self.batch_shape))
        td = self.context.expand(shape).copy() if lead else self.context.copy()
        hidden = {k: v for k, v in values.items() if isinstance(k, HiddenSite)}
        for key, value in values.items():
            if not isinstance(key, HiddenSite):
                td.set(key, value)
        # (*lead, *batch) -> (N,): modules such as conv nets want one flat batch dimension
        # (N given explicitly: reshape(-1) is ambiguous for an empty batch)
        n = shape.numel()
        flat = td.reshape(n)
        if self.inner_shape:  # (N,) -> (N, *inner): e.g. whole trajectories for an RNN
            flat.batch_size = torch.Size((*flat.batch_size, *self.inner_shape))
        device = next(iter(values.values())).device if values else flat.device
        if (hidden or self._observed) and self.inner_shape:
            raise ValueError(
                "hidden sites (as inputs or in Neuron targets) cannot be combined with "
                "sample_dims (whole trajectories in one sample); attribute step by step"
            )
        # hidden sites: their activation replaced by the values, (*lead, *batch, *f) -> (N, *f)
        swaps = [replacing(k, v.reshape(n, *v.shape[len(shape) :])) for k, v in hidden.items()]
        seen: dict[str, torch.Tensor] = {}
        with (
            set_interaction_type(InteractionType.DETERMINISTIC),
            cudnn_rnn_guard(self.module, device),
            intercepting([*swaps, *captured(list(self._observed.values()), seen)]),
        ):
            out = self.module(flat)
        for key, site in self._observed.items():  # what Neuron targets read
            value = checked_activation(site, seen.get(site.name), out.batch_size, own_call=False)
            out.set(key, value)
        if self.inner_shape:  # targets give one value per sample (per trajectory)
            out.batch_size = out.batch_size[:1]
        reference = (self.reference.expand(shape) if lead else self.reference).reshape(n)
        rows = []  # each (k, N)
        for group in _groups(self.targets):
            if len(group) > 1:  # several columns of one vector: one gather, not k selects
                rows.append(_gather(group, out, reference))
                continue
            target = group[0]
            rows.append(per_sample(target(out, reference), out.batch_size, target)[None])
        return torch.cat(rows).reshape(self.n_targets, *shape)

    def gradients(
        self, values: Mapping[NestedKey, torch.Tensor], lead: tuple[int, ...] = ()
    ) -> dict[NestedKey, torch.Tensor]:
        """Per-sample gradients of every target at ``values``, in the engine's strategy.

        Args:
            values: input entries, each ``(*lead, *batch, *feature)``; they are detached here.
            lead: leading dimensions added in front of the batch (interpolation steps, noise
                samples).

        Returns:
            For each input key a tensor ``(n_targets, *lead, *batch, *feature)``.
        """
        keys = list(values)
        mode = self.mode(values, lead)
        if mode == "forward":
            try:
                grads = self._forward_mode(keys, values, lead)
            except (NotImplementedError, RuntimeError) as err:
                if not forward_mode_unsupported(err):
                    raise
                if self.strategy == "forward":
                    raise RuntimeError(
                        f"strategy='forward' needs forward-mode AD through the whole module, "
                        f"which failed here: {err}. Use strategy='reverse' (or 'auto', which "
                        "falls back)."
                    ) from err
                self._support["forward"] = False  # "auto": reverse mode from now on
                return self._reverse_mode(keys, values, lead)
            self._support["forward"] = True
            return grads
        if mode == "replicate":
            return self._replicate(keys, values, lead)
        return self._reverse_mode(keys, values, lead)

    def mode(
        self, values: Mapping[NestedKey, torch.Tensor], lead: tuple[int, ...] = ()
    ) -> Strategy:
        """The strategy :meth:`gradients` takes for ``values``."""
        if self.strategy != "auto":
            return self.strategy
        batch_dims = len(lead) + len(self.batch_shape)
        n_features = sum(math.prod(v.shape[batch_dims:]) for v in values.values())
        if n_features < self.n_targets and self._support["forward"] is not False:
            return "forward"
        return "reverse"

    def _reverse_mode(self, keys, values, lead) -> dict[NestedKey, torch.Tensor]:
        n = self.n_targets
        leaves = [values[k].detach().requires_grad_() for k in keys]
        outputs = self.evaluate(dict(zip(keys, leaves, strict=True)), lead)
        sums = outputs.reshape(n, -1).sum(1)  # (n_targets,): samples are independent
        if n == 1:
            grads = torch.autograd.grad(sums, leaves, materialize_grads=True)
            return {k: g.unsqueeze(0) for k, g in zip(keys, grads, strict=True)}
        cotangents = torch.eye(n, dtype=sums.dtype, device=sums.device)
        grads = torch.autograd.grad(
            sums, leaves, grad_outputs=cotangents, is_grads_batched=True, materialize_grads=True
        )
        # an input no target depends on comes back as zeros *without* the batched dimension
        # (torch 2.13 with materialize_grads): give it the (n_targets, ...) shape of the others
        grads = tuple(
            g if g.shape[:1] == (n,) and g.shape[1:] == leaf.shape else g.expand(n, *leaf.shape)
            for g, leaf in zip(grads, leaves, strict=True)
        )
        return dict(zip(keys, grads, strict=True))

    def _replicate(self, keys, values, lead) -> dict[NestedKey, torch.Tensor]:
        n = self.n_targets
        # (*lead, *batch, *f) -> (n_targets, *lead, *batch, *f): replica t serves target t
        leaves = [
            values[k].detach().expand(n, *values[k].shape).clone().requires_grad_() for k in keys
        ]
        outputs = self.evaluate(dict(zip(keys, leaves, strict=True)), (n, *lead))
        # (n_eval, n_rep, ...) -> diagonal: target t evaluated on replica t
        total = outputs.diagonal(dim1=0, dim2=1).sum()
        grads = torch.autograd.grad(total, leaves, materialize_grads=True)
        return dict(zip(keys, grads, strict=True))

    def _forward_mode(self, keys, values, lead) -> dict[NestedKey, torch.Tensor]:
        shape = (*lead, *self.batch_shape)
        primals = tuple(values[k].detach() for k in keys)
        features = [p.shape[len(shape) :] for p in primals]
        sizes = [math.prod(f) for f in features]
        n_features = sum(sizes)
        eye = torch.eye(n_features, dtype=primals[0].dtype, device=primals[0].device)
        # tangent j is one-hot on feature j for every sample at once: samples are independent,
        # so one jvp gives d target / d x_j for the whole batch
        tangents, start = [], 0
        for p, f, size in zip(primals, features, sizes, strict=True):
            block = eye[:, start : start + size].reshape(n_features, *[1] * len(shape), *f)
            tangents.append(block.expand(n_features, *p.shape))  # (F, *shape, *f)
            start += size

        def evaluate(*xs: torch.Tensor) -> torch.Tensor:
            return self.evaluate(dict(zip(keys, xs, strict=True)), lead)

        def column(*ts: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(evaluate, primals, ts)[1]

        with torch.no_grad():  # forward-mode AD needs no graph
            jac = torch.func.vmap(column)(*tangents)  # (F, n_targets, *shape)
        out, start = {}, 0
        for k, f, size in zip(keys, features, sizes, strict=True):
            block = jac[start : start + size]  # (size, n_t, *shape)
            out[k] = block.movedim(0, -1).reshape(*block.shape[1:], *f)  # (n_t, *shape, *f)
            start += size
        return out


def cudnn_rnn_guard(module: nn.Module, device: torch.device | None) -> AbstractContextManager:
    """Turns cuDNN off for one attribution pass where it would fail: cuDNN's RNN kernels have
    no backward in eval mode ("cudnn RNN backward can only be called in training mode"), so a
    recurrent policy (TorchRL's ``LSTMModule``/``GRUModule``) evaluated on a GPU runs on
    PyTorch's own RNN kernels here; every other case, and every other setting, is untouched.

    Examples:
        >>> lstm = nn.LSTM(3, 4).eval()
        >>> type(cudnn_rnn_guard(lstm, torch.device("cuda"))).__name__
        '_GeneratorContextManager'
        >>> type(cudnn_rnn_guard(lstm.train(), torch.device("cuda"))).__name__
        'nullcontext'
    """
    if device is None or device.type != "cuda" or not _eval_rnns(module):
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(
        enabled=False,
        benchmark=cudnn.benchmark,
        deterministic=cudnn.deterministic,
        allow_tf32=cudnn.allow_tf32,
    )


def _eval_rnns(module: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) and not m.training for m in module.modules())


def forward_mode_unsupported(err: Exception) -> bool:
    """True when ``err`` says the module cannot run under forward-mode AD or its vmap."""
    text = str(err)
    return isinstance(err, NotImplementedError | RuntimeError) and any(
        marker in text for marker in ("forward AD", "forward mode", "jvp", "vmap", "Batching")
    )


def _groups(targets: Mapping[str, Target]) -> list[list[Target]]:
    """Consecutive targets that are columns of the same vector entry form one group; every
    other target is a group of its own."""
    groups: list[list[Target]] = []
    for target in targets.values():
        column = target.column
        last = groups[-1][-1].column if groups else None
        if column is not None and last is not None and last[0] == column[0]:
            groups[-1].append(target)
        else:
            groups.append([target])
    return groups


def _gather(group: list[Target], out: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
    """``(k, N)`` values of k column targets of one vector entry, by a single gather."""
    columns = [cast(tuple[NestedKey, int], t.column) for t in group]  # _groups: all columns
    key = columns[0][0]
    value = out.get(key, None)
    width = value.shape[-1] if isinstance(value, torch.Tensor) else 0
    index = [i for _, i in columns]
    if (
        not isinstance(value, torch.Tensor)
        or value.ndim != out.batch_dims + 1
        or not all(-width <= i < width for i in index)
    ):
        # missing key, not a vector per sample, or out of range: each target's own error
        return torch.stack([per_sample(t(out, reference), out.batch_size, t) for t in group])
    at = _columns(tuple(i % width for i in index), value.device)
    return value.index_select(-1, at).movedim(-1, 0)  # (N, k) -> (k, N)


@functools.lru_cache(maxsize=128)
def _columns(index: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The gather indices on ``device``, copied there once (no copy per call)."""
    return torch.tensor(index, device=device)
