"""Guided backpropagation (Springenberg et al., 2015) and Guided GradCAM (Selvaraju et al.,
2017), every target from one batched backward per pass (captum's ``GuidedBackprop`` and
``GuidedGradCam``)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import NestedKey
from torch import nn

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.gradcam import GradCAM
from tdhook_rl.attribution.hidden import HiddenSite, captured, checked_activation, hidden_site
from tdhook_rl.core.intercept import Interception, intercepting
from tdhook_rl.core.sites import SiteSpec, resolve_sites

__all__ = ["GuidedBackprop", "GuidedGradCAM", "guided_relus"]


class _PositiveGradient(torch.autograd.Function):
    """The identity, whose backward keeps only the positive part of the gradient. Placed on
    a ReLU's output, the ReLU's own backward then masks by its positive inputs: the gradient
    to the ReLU's input is ``relu(grad) * (input > 0)``, guided backpropagation's rule. The
    backward is one plain torch op, so it runs under ``is_grads_batched``'s vmap."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp_min(0)


def _guided(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return _PositiveGradient.apply(value)
    return None  # a grad-free pass: nothing to guide


@contextmanager
def guided_relus(module: nn.Module) -> Iterator[None]:
    """Inside the block, in this thread only, every ``nn.ReLU`` of ``module`` passes back
    only positive gradients at positive inputs (captum's ``GuidedBackprop`` overrides the
    same modules: a functional ``torch.relu`` is left plain). The module is not changed: the
    rule lives in :mod:`tdhook_rl.core.intercept`'s per-thread interceptions, gone on exit,
    exceptions included; forward values are unchanged.

    Examples:
        >>> relu = nn.ReLU()
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> with guided_relus(relu):
        ...     y = relu(x)
        >>> torch.autograd.grad(y, x, torch.tensor([5.0, -4.0, 1.0]))[0]
        tensor([0., 0., 1.])
        >>> len(relu._forward_hooks)
        0
    """
    relus = [m for m in module.modules() if isinstance(m, nn.ReLU)]
    with intercepting([Interception(m, _guided) for m in relus]):
        yield


def _reverse(engine: GradientEngine, method: str) -> GradientEngine:
    """The engine in a mode with a backward to guide (reverse, or replicate if asked)."""
    if engine.strategy in ("reverse", "replicate"):
        return engine
    if engine.strategy == "forward":
        raise ValueError(
            f"{method} modifies the backward pass, which strategy='forward' does not run; "
            "use strategy='reverse' (or 'auto')"
        )
    reverse = copy.copy(engine)  # "auto": reverse mode, the engine's other state shared
    reverse.strategy = "reverse"
    return reverse


def _input_keys(inputs: Mapping[Any, torch.Tensor], method: str) -> None:
    for key in inputs:
        if isinstance(key, HiddenSite):
            raise ValueError(
                f"{method} attributes to entries the module reads, and {key.name!r} is a "
                "hidden site; list input entries (e.g. 'observation') in inputs"
            )


class GuidedBackprop(AttributionMethod):
    """The gradient of each target with every ``nn.ReLU`` passing back only positive
    gradients at positive inputs: ``relu(grad_out) * (x > 0)`` at each ReLU (captum's
    ``GuidedBackprop``; ReLUs applied as ``torch.relu`` or ``F.relu`` keep their plain
    backward, as in captum). Every target goes through one batched backward, in reverse mode
    (forward mode has no backward to modify; ``strategy="forward"`` is refused). The rule is
    installed per call and per thread (:func:`guided_relus`): the module, and other threads'
    calls of it, are untouched.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
        ...                        ["observation"], ["logits"])
        >>> explained = thr.Attributed(net, GuidedBackprop(), inputs=["observation"],
        ...                            targets={"a": ("logits", 0), "b": ("logits", 1)})
        >>> out = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> out["attribution", "b", "observation"].shape
        torch.Size([5, 3])
    """

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        _input_keys(inputs, "GuidedBackprop")
        with guided_relus(engine.module):
            grads = _reverse(engine, "GuidedBackprop").gradients(inputs)  # (n_t, *batch, *f)
        return AttributionResult(grads)

    def __repr__(self) -> str:
        return "GuidedBackprop()"


class GuidedGradCAM(AttributionMethod):
    """GradCAM at a conv site, upsampled to the input's spatial shape, times guided
    backpropagation at the input: ``guided(x)[c, i, j] * up(ReLU(sum_k w_k A_k))[i, j]``
    (captum's ``GuidedGradCam``, whose GradCAM part takes plain gradients). Both passes are
    batched over every target: a guided backward to the inputs (see
    :class:`GuidedBackprop`), and a plain one to the site (see
    :class:`~tdhook_rl.attribution.GradCAM`); the site's activation is recorded in the first.

    Inputs are entries the module reads, image-like ``[*batch, C, H, W]``; results have
    their shape. The site's activation must be ``[*batch, C_site, h, w]``.

    Args:
        site: the conv site (a submodule path, ``ModuleSite``, or a key a sub-module writes).
        interpolate_mode: how GradCAM's ``h x w`` map is upsampled to ``H x W``
            (``torch.nn.functional.interpolate``'s ``mode``; captum's default ``"nearest"``).

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 2))
        >>> policy = TensorDictModule(net, ["board"], ["logits"])
        >>> explained = thr.Attributed(policy, GuidedGradCAM("module.1"), inputs=["board"],
        ...                            targets={"left": ("logits", 0), "right": ("logits", 1)})
        >>> out = explained(TensorDict(board=torch.randn(5, 3, 6, 6), batch_size=[5]))
        >>> out["attribution", "left", "board"].shape
        torch.Size([5, 3, 6, 6])
    """

    def __init__(self, site: SiteSpec, interpolate_mode: str = "nearest") -> None:
        self.site = site
        self.interpolate_mode = interpolate_mode

    def _site(self, module: nn.Module) -> HiddenSite:
        sites = resolve_sites(module, self.site)
        if len(sites) != 1:
            raise ValueError(
                f"GuidedGradCAM({self.site!r}) names {len(sites)} sites ({list(sites)}); "
                "give one conv site"
            )
        ((name, site),) = sites.items()
        return hidden_site(module, name, site)

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        _input_keys(inputs, "GuidedGradCAM")
        batch = engine.batch_shape
        for key, x in inputs.items():
            if x.ndim - len(batch) != 3:
                raise ValueError(
                    f"GuidedGradCAM needs image-like [*batch, C, H, W] inputs; {key!r} has "
                    f"per-sample shape {tuple(x.shape[len(batch) :])}"
                )
        site = self._site(engine.module)
        seen: dict[str, torch.Tensor] = {}
        with guided_relus(engine.module), intercepting(captured([site], seen)):
            guided = _reverse(engine, "GuidedGradCAM").gradients(inputs)  # (n_t, *batch, C, H, W)
        # the site's activation in that pass: (N, C_s, h, w) -> (*batch, C_s, h, w)
        flat = torch.Size((batch.numel(),))
        value = seen.get(site.name)
        if value is not None and engine.strategy == "replicate":  # one replica per target
            value = value[: flat.numel()]
        value = checked_activation(site, value, flat).detach()
        activation = value.reshape(*batch, *value.shape[1:])
        context = engine.context.copy()  # GradCAM's pass: the inputs at their values
        for key, x in inputs.items():
            context.set(key, x)
        at_inputs = engine.at(context, engine.reference)
        cam = GradCAM(relu=True).attribute(at_inputs, {site: activation}).attributions[site]
        out = {}
        for key, g in guided.items():  # cam: (n_t, *batch, h, w) -> (n_t, *batch, 1, H, W)
            size = tuple(g.shape[-2:])
            flat_cam = cam.reshape(-1, 1, *cam.shape[-2:])
            up = F.interpolate(flat_cam, size=size, mode=self.interpolate_mode)
            out[key] = g * up.reshape(*cam.shape[:-2], 1, *size)
        return AttributionResult(out)

    def __repr__(self) -> str:
        return f"GuidedGradCAM({self.site!r}, interpolate_mode={self.interpolate_mode!r})"
