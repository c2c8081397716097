"""The batched multi-target gradient engine shared by every attribution method.

One call of :meth:`GradientEngine.gradients` runs the wrapped module once on a batch of input
values and returns the gradient of *every* target with respect to *every* input, per sample,
from one backward pass batched over one-hot cotangents (``is_grads_batched``). There is no
Python loop over targets on the backward side.

Per-sample gradients come from differentiating the sum over the batch: this assumes samples do
not interact inside the module (true for MLPs, conv nets and normalization layers in eval
mode; false for batch norm in training mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type

from tdhook_rl.targets import Target

Backward = Literal["vmap", "replicate"]
BACKWARDS: tuple[str, ...] = ("vmap", "replicate")


class GradientEngine:
    """Evaluates targets and their input gradients for batches of input values.

    Args:
        module: the wrapped TensorDict module.
        targets: bound targets, in output order.
        context: the module's other inputs (everything but the attributed entries), with the
            caller's batch shape; grad-free tensors.
        reference: entries of the original forward that targets read (the taken action).
        backward: ``"vmap"`` (one forward, backward vmapped over one-hot cotangents) or
            ``"replicate"`` (the batch is replicated once per target and one plain backward
            runs; more forward work, for modules whose backward has no batching rule).
    """

    def __init__(
        self,
        module: TensorDictModuleBase,
        targets: Mapping[str, Target],
        context: TensorDictBase,
        reference: TensorDictBase,
        backward: Backward = "vmap",
    ) -> None:
        self.module = module
        self.targets = dict(targets)
        self.context = context
        self.reference = reference
        self.backward = backward

    @property
    def batch_shape(self) -> torch.Size:
        return self.context.batch_size

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def expand(self, *lead: int) -> GradientEngine:
        """An engine whose batch is ``(*lead, *batch_shape)`` (context and reference expanded)."""
        shape = (*lead, *self.batch_shape)
        return GradientEngine(
            self.module,
            self.targets,
            self.context.expand(shape),
            self.reference.expand(shape),
            self.backward,
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
        for key, value in values.items():
            td.set(key, value)
        # (*lead, *batch) -> (N,): modules such as conv nets want one flat batch dimension
        flat = td.reshape(-1)
        with set_interaction_type(InteractionType.DETERMINISTIC):
            out = self.module(flat)
        reference = (self.reference.expand(shape) if lead else self.reference).reshape(-1)
        per_target = [
            _per_sample(name, target, target(out, reference), flat.batch_size)
            for name, target in self.targets.items()
        ]
        return torch.stack(per_target).reshape(self.n_targets, *shape)

    def gradients(
        self, values: Mapping[NestedKey, torch.Tensor], lead: tuple[int, ...] = ()
    ) -> dict[NestedKey, torch.Tensor]:
        """Per-sample gradients of every target at ``values``.

        Args:
            values: input entries, each ``(*lead, *batch, *feature)``; they are detached here.
            lead: leading dimensions added in front of the batch (interpolation steps, noise
                samples).

        Returns:
            For each input key a tensor ``(n_targets, *lead, *batch, *feature)``.
        """
        keys = list(values)
        n = self.n_targets
        if self.backward == "replicate":
            # (*lead, *batch, *f) -> (n_targets, *lead, *batch, *f): replica t serves target t
            leaves = [
                values[k].detach().expand(n, *values[k].shape).clone().requires_grad_()
                for k in keys
            ]
            outputs = self.evaluate(dict(zip(keys, leaves, strict=True)), (n, *lead))
            # (n_eval, n_rep, ...) -> diagonal: target t evaluated on replica t
            total = outputs.diagonal(dim1=0, dim2=1).sum()
            grads = torch.autograd.grad(total, leaves, materialize_grads=True)
            return dict(zip(keys, grads, strict=True))
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
        return dict(zip(keys, grads, strict=True))


def _per_sample(name: str, target: Target, value: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"target {name!r} ({target!r}) returned {type(value).__name__}, not a tensor"
        )
    if value.shape == batch:
        return value
    if value.shape == (*batch, 1):
        return value.squeeze(-1)
    per_sample = tuple(value.shape[len(batch) :]) if value.shape[: len(batch)] == batch else None
    got = (
        f"per-sample shape {per_sample}"
        if per_sample is not None
        else f"shape {tuple(value.shape)}"
    )
    raise ValueError(
        f"target {name!r} ({target!r}) must give one scalar per sample (a trailing dimension "
        f"of size 1 is fine), got {got}. {target.hint()}"
    )
