"""The LRP attribution method: relevance of every target from one forward and one backward.

LRP is a modified backward: under a :class:`~.composites.Composite` each ruled layer's
backward returns relevance instead of the gradient. Relevance is linear in the relevance put
at the top, so the relevance for target ``t`` with zennit's top relevance ``one-hot * f_t(x)``
is the modified backward of the one-hot, times ``f_t(x)`` per sample. The one-hots of all
targets of all heads are batched in one backward (``is_grads_batched``) after one forward,
which also gives the target values. Forward-mode AD has no meaning for LRP: the engine's
strategy is ignored, it is always this reverse pass.

What sits between the network's modules and the target is differentiated as usual: for a
target that is a column of an output (a logit, the value) that is exactly zennit's
convention; for a non-linear target (the log-probability of the taken action, an expected
outcome computed from logits) the relevance at the network's outputs is its gradient times
its value. Functional operations inside a module's ``forward`` that has no rule of its own
(``torch.relu``, reshapes, ``+``) are differentiated too: exact for ReLU and reshapes, not a
conservative rule for sums of branches (residual connections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from tensordict import NestedKey

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult, sum_features
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.lrp.composites import Composite, EpsilonPlus, applying
from tdhook_rl.attribution.lrp.rules import _Relevance

__all__ = ["LRP"]


class LRP(AttributionMethod):
    """Layer-wise relevance propagation (Bach et al. 2015) under a composite of rules.

    Args:
        composite: which rule each layer gets (default :class:`~.composites.EpsilonPlus`).
        check_graph: refuse a custom autograd function met between the ruled layers (its
            backward is a gradient, not a relevance rule; give its module a rule).

    The completeness delta written next to the relevance is LRP's conservation check:
    ``sum of the relevance over the inputs - target`` (near zero for bias-free networks
    under conservative rules with small epsilon).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> from tdhook_rl.attribution.lrp import Composite, Epsilon
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8, bias=False), torch.nn.Tanh(),
        ...                           torch.nn.Linear(8, 2, bias=False))
        >>> policy = TensorDictModule(net, ["observation"], ["logits"])
        >>> explained = thr.Attributed(policy, LRP(Composite({torch.nn.Linear: Epsilon(1e-9)})),
        ...                            inputs=["observation"],
        ...                            targets={"left": ("logits", 0), "right": ("logits", 1)})
        >>> out = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> relevance = out["attribution", "left", "observation"]
        >>> relevance.shape, torch.allclose(relevance.sum(-1), out["logits"][:, 0], atol=1e-5)
        (torch.Size([5, 3]), True)
    """

    has_convergence_delta: ClassVar[bool] = True

    def __init__(self, composite: Composite | None = None, check_graph: bool = True) -> None:
        if composite is not None and not isinstance(composite, Composite):
            raise TypeError(
                f"composite must be a Composite (e.g. EpsilonPlus(), Composite({{nn.Linear: "
                f"Epsilon()}})), got {composite!r}"
            )
        self.composite = composite if composite is not None else EpsilonPlus()
        self.check_graph = check_graph

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        keys = list(inputs)
        n, batch = engine.n_targets, engine.batch_shape
        leaves = [inputs[k].detach().requires_grad_() for k in keys]
        with applying(engine.module, self.composite):
            values = engine.evaluate(dict(zip(keys, leaves, strict=True)), ())  # (n, *batch)
        if self.check_graph:
            check_no_custom_functions(values)
        sums = values.reshape(n, -1).sum(1)  # samples are independent
        if n == 1:
            grads = torch.autograd.grad(sums, leaves, allow_unused=True, materialize_grads=True)
            grads = tuple(g.unsqueeze(0) for g in grads)
        else:
            eye = torch.eye(n, dtype=sums.dtype, device=sums.device)
            grads = torch.autograd.grad(
                sums, leaves, eye, is_grads_batched=True, allow_unused=True, materialize_grads=True
            )
        target = values.detach()
        out, total = {}, torch.zeros_like(target)
        for key, g, leaf in zip(keys, grads, leaves, strict=True):
            if g.shape != (n, *leaf.shape):  # an input no target reads: zeros, unbatched
                g = g.expand(n, *leaf.shape)
            relevance = g * target.reshape(*target.shape, *[1] * (leaf.ndim - len(batch)))
            out[key] = relevance  # (n, *batch, *feature)
            total = total + sum_features(relevance, 1 + len(batch))
        return AttributionResult(out, delta=total - target)

    def __repr__(self) -> str:
        return f"LRP(composite={self.composite!r})"


def check_no_custom_functions(output: torch.Tensor) -> None:
    """Raises if the graph of ``output`` runs a custom ``torch.autograd.Function`` below
    (closer to the inputs than) an LRP-ruled layer: its backward would be a gradient.

    Examples:
        >>> x = torch.ones(2, requires_grad=True)
        >>> check_no_custom_functions(x * 2)  # only built-in operations: fine
    """
    root = output.grad_fn
    if root is None:
        return
    seen: set[tuple[int, bool]] = set()
    todo: list[tuple[Any, bool]] = [(root, False)]
    while todo:
        node, below = todo.pop()
        if node is None or (id(node), below) in seen:
            continue
        seen.add((id(node), below))
        cls = getattr(node, "_forward_cls", None)
        if cls is _Relevance:
            below = True
        elif cls is not None and below:
            raise RuntimeError(
                f"LRP meets the custom autograd function {cls.__name__} between the ruled "
                "layers, where its backward would be a plain gradient: give the module that "
                "calls it a rule, e.g. Composite({MyModule: Pass()})"
            )
        todo.extend((child, below) for child, _ in node.next_functions)
