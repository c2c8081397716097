"""What an intervention does to an activation: ``(activation, td) -> activation``.

Each intervention checks its tensors against the activation (width, device, shape) and
raises an error naming the site. Tensors an intervention holds are moved with
:meth:`Intervention.to` once, never per step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.core.keys import as_key
from tdhook_rl.core.vmap import is_vmapped

__all__ = [
    "Ablate",
    "Clamp",
    "FromCallable",
    "Intervention",
    "Patch",
    "Steer",
    "steering_vector",
]


class Intervention(ABC):
    """Base class: maps the activation at a site (and the call's TensorDict) to a new one."""

    @abstractmethod
    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        """Returns the replacement activation (same shape) for ``site``."""

    def to(self, device: torch.device | str) -> Intervention:
        """Moves held tensors to ``device`` (in place) and returns ``self``."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


def _check_device(t: torch.Tensor, activation: torch.Tensor, site: str, what: str) -> None:
    if t.device != activation.device:
        raise ValueError(
            f"site {site!r}: the {what} is on {t.device} but the activation is on "
            f"{activation.device}; move it once with intervention.to({str(activation.device)!r})."
        )


def _units_index(units: Sequence[int] | None, dim: int, ndim: int) -> tuple:
    index: list = [slice(None)] * ndim
    if units is not None:
        index[dim] = list(units)
    return tuple(index)


def _check_dim(dim: int, activation: torch.Tensor, site: str) -> None:
    if not -activation.ndim <= dim < activation.ndim:
        raise IndexError(
            f"site {site!r}: dim {dim} is out of range for an activation of shape "
            f"{tuple(activation.shape)} ({activation.ndim} dimensions); the unit dimension is "
            "usually the last, dim=-1."
        )


def _check_units(units: Sequence[int] | None, dim: int, activation: torch.Tensor, site: str):
    if units is None:
        return
    _check_dim(dim, activation, site)
    width = activation.shape[dim]
    bad = [u for u in units if not -width <= u < width]
    if bad:
        raise IndexError(f"site {site!r}: units {bad} out of range for width {width} (dim {dim})")


class Ablate(Intervention):
    """Replaces selected units (or all) by a constant: zero, a value, or a recorded mean.

    Args:
        units: indices along ``dim`` to ablate; ``None`` for all.
        value: a number, or a tensor broadcastable to the activation's per-sample shape
            (e.g. the mean activation from :meth:`from_mean`).
        dim: the unit dimension (default: the last).

    Examples:
        >>> a = torch.ones(2, 4)
        >>> Ablate(units=[1, 3])(a, None, "h")
        tensor([[1., 0., 1., 0.],
                [1., 0., 1., 0.]])
    """

    def __init__(
        self, units: Sequence[int] | None = None, value: float | torch.Tensor = 0.0, dim: int = -1
    ) -> None:
        self.units = None if units is None else [int(u) for u in units]
        self.value = value
        self.dim = dim

    @classmethod
    def from_mean(
        cls, activations: torch.Tensor, units: Sequence[int] | None = None, batch_dims: int = 1
    ) -> Ablate:
        """Mean ablation: the value is the mean of recorded ``activations`` over their first
        ``batch_dims`` dimensions (e.g. ``rollout["activations", "h"]`` with
        ``batch_dims=rollout.batch_dims``)."""
        mean = activations.reshape(-1, *activations.shape[batch_dims:]).mean(0)
        return cls(units=units, value=mean)

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        _check_dim(self.dim, activation, site)
        _check_units(self.units, self.dim, activation, site)
        value = self.value
        if isinstance(value, torch.Tensor):
            _check_device(value, activation, site, "ablation value")
            try:
                value = value.to(activation.dtype).expand_as(activation)
            except RuntimeError:
                raise ValueError(
                    f"site {site!r}: ablation value of shape {tuple(value.shape)} does not "
                    f"broadcast to the activation's shape {tuple(activation.shape)}"
                ) from None
        else:
            value = torch.full_like(activation, float(value))
        if self.units is None:
            return value.clone()
        out = activation.clone()
        index = _units_index(self.units, self.dim, activation.ndim)
        out[index] = value[index]
        return out

    def __repr__(self) -> str:
        value = "tensor" if isinstance(self.value, torch.Tensor) else self.value
        return f"Ablate(units={self.units}, value={value}, dim={self.dim})"


class Patch(Intervention):
    """Replaces the activation by values from another run, matched by batch index.

    Inside an attribution pass over the patched module (``Attributed(Intervened(m, {site:
    Patch(...)}), "integrated_gradients", ...)``) the network runs on ``k`` copies of the
    batch at once, flattened copy-major (``(k, *batch) -> (k * B,)``, as
    :class:`~tdhook_rl.attribution.engine.GradientEngine` reshapes them): a source of the
    batch's shape ``(*batch, *f)`` is repeated for each copy, so every path point of sample
    ``b`` gets sample ``b``'s patch. Any activation whose leading size is a whole multiple of
    the source's batch is patched that way; other shapes are refused.

    Args:
        source: a tensor shaped like the activation, or a TensorDict (e.g. a recorded clean
            run) holding it at ``key``.
        key: where the values are in a TensorDict source (default ``("activations", site)``).
        units: patch only these indices along ``dim`` (default: all).

    Examples:
        >>> Patch(torch.zeros(2, 3))(torch.ones(2, 3), None, "h")
        tensor([[0., 0., 0.],
                [0., 0., 0.]])
    """

    def __init__(
        self,
        source: torch.Tensor | TensorDictBase,
        key: NestedKey | None = None,
        units: Sequence[int] | None = None,
        dim: int = -1,
    ) -> None:
        self.source = source
        self.key = None if key is None else as_key(key, "patch key")
        self.units = None if units is None else [int(u) for u in units]
        self.dim = dim

    def values_for(self, site: str) -> torch.Tensor:
        if isinstance(self.source, torch.Tensor):
            return self.source
        key = self.key if self.key is not None else ("activations", site)
        value = self.source.get(key, None)
        if value is None:
            raise KeyError(f"site {site!r}: the patch source has no entry {key!r}")
        return value

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        values = self.values_for(site)
        _check_device(values, activation, site, "patch source")
        matched = _over_copies(values, activation.shape)
        if matched is None and is_vmapped(activation):
            raise ValueError(
                f"site {site!r} runs inside torch.vmap (e.g. each agent's network of a "
                "MultiAgentMLP with share_params=False), where the activation is one vmapped "
                f"slice of shape {tuple(activation.shape)}; Patch cannot match it to the source "
                f"of shape {tuple(values.shape)}. Patch a site outside the vmap."
            )
        if matched is None:
            raise ValueError(
                f"site {site!r}: patch source has shape {tuple(values.shape)} but the activation "
                f"has shape {tuple(activation.shape)}; patch from a run with the same batch (an "
                "attribution pass may run k copies of it, but the activation's leading size is "
                "not a multiple of the source's batch here)."
            )
        values = matched.to(activation.dtype)
        if self.units is None:
            return values.clone()
        _check_units(self.units, self.dim, activation, site)
        out = activation.clone()
        index = _units_index(self.units, self.dim, activation.ndim)
        out[index] = values[index]
        return out

    def to(self, device: torch.device | str) -> Patch:
        self.source = self.source.to(device)
        return self

    def __repr__(self) -> str:
        return f"Patch(key={self.key!r}, units={self.units})"


def _over_copies(values: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """``values`` laid out as an activation of ``shape``, or ``None`` when it does not fit.

    Equal shapes fit as they are; ``(*lead, *values.shape)`` repeats them over ``lead``; and
    ``(k * S, *f)`` for ``values`` ``(*s, *f)`` with ``prod(s) = S`` repeats the flattened
    source ``k`` times, copy-major, the layout of ``(k, *batch)`` reshaped to one dimension.
    """
    if values.shape == shape:
        return values
    if len(shape) > values.ndim and shape[len(shape) - values.ndim :] == values.shape:
        return values.expand(shape)
    if not shape:
        return None
    features = shape[1:]
    n_lead = values.ndim - len(features)
    if n_lead < 1 or values.shape[n_lead:] != features:
        return None
    per_copy = values.shape[:n_lead].numel()
    if per_copy == 0 or shape[0] % per_copy:
        return None
    flat = values.reshape(per_copy, *features)  # (*s, *f) -> (S, *f)
    # (S, *f) -> (k, S, *f) -> (k * S, *f): copy i of sample b sits at i * S + b
    return flat.expand(shape[0] // per_copy, *flat.shape).reshape(shape)


class Steer(Intervention):
    """Adds ``scale * vector`` to the activation (a steering vector, see :func:`steering_vector`).

    Examples:
        >>> Steer(torch.tensor([1.0, -1.0]), scale=2.0)(torch.zeros(3, 2), None, "h")[0]
        tensor([ 2., -2.])
    """

    def __init__(self, vector: torch.Tensor, scale: float = 1.0) -> None:
        if not isinstance(vector, torch.Tensor):
            raise TypeError(f"Steer needs a tensor vector, got {type(vector).__name__}")
        self.vector = vector
        self.scale = float(scale)

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        _check_device(self.vector, activation, site, "steering vector")
        per_sample = activation.shape[activation.ndim - self.vector.ndim :]
        if self.vector.shape != per_sample:
            raise ValueError(
                f"site {site!r}: steering vector has shape {tuple(self.vector.shape)} but the "
                f"activation's trailing shape is {tuple(per_sample)}"
            )
        return activation + self.scale * self.vector.to(activation.dtype)

    def __repr__(self) -> str:
        return f"Steer(width={tuple(self.vector.shape)}, scale={self.scale})"


def steering_vector(
    positive: torch.Tensor, negative: torch.Tensor, batch_dims: int = 1
) -> torch.Tensor:
    """Difference of mean activations between two sets of states (``positive - negative``).

    Args:
        positive, negative: activations ``[*batch, *feature]`` (e.g. states where the pole
            leans left vs right), with ``batch_dims`` leading batch dimensions.

    Examples:
        >>> steering_vector(torch.ones(4, 2), torch.zeros(3, 2))
        tensor([1., 1.])
    """
    p = positive.reshape(-1, *positive.shape[batch_dims:])
    n = negative.reshape(-1, *negative.shape[batch_dims:])
    if p.shape[1:] != n.shape[1:]:
        raise ValueError(
            f"positive and negative activations differ in shape: {tuple(p.shape[1:])} vs "
            f"{tuple(n.shape[1:])}"
        )
    if p.shape[0] == 0 or n.shape[0] == 0:
        raise ValueError("steering_vector needs at least one state in each set")
    return p.mean(0) - n.mean(0)


class Clamp(Intervention):
    """Clamps the activation (or selected units) to ``[min, max]``.

    Examples:
        >>> Clamp(max=0.5)(torch.tensor([[0.0, 1.0]]), None, "h")
        tensor([[0.0000, 0.5000]])
    """

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        units: Sequence[int] | None = None,
        dim: int = -1,
    ) -> None:
        if min is None and max is None:
            raise ValueError("Clamp needs min, max or both")
        self.min, self.max = min, max
        self.units = None if units is None else [int(u) for u in units]
        self.dim = dim

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        clamped = activation.clamp(self.min, self.max)
        if self.units is None:
            return clamped
        _check_units(self.units, self.dim, activation, site)
        out = activation.clone()
        index = _units_index(self.units, self.dim, activation.ndim)
        out[index] = clamped[index]
        return out

    def __repr__(self) -> str:
        return f"Clamp(min={self.min}, max={self.max}, units={self.units})"


class FromCallable(Intervention):
    """A user function ``(activation, td) -> activation``.

    Examples:
        >>> FromCallable(lambda a, td: -a)(torch.ones(1, 2), None, "h")
        tensor([[-1., -1.]])
    """

    def __init__(self, fn: Callable[[torch.Tensor, TensorDictBase], torch.Tensor]) -> None:
        if not callable(fn):
            raise TypeError(
                f"FromCallable needs a callable (activation, td) -> activation, got {fn!r}"
            )
        self.fn = fn

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        out = self.fn(activation, td)
        if not isinstance(out, torch.Tensor) or out.shape != activation.shape:
            got = getattr(out, "shape", type(out).__name__)
            raise ValueError(
                f"site {site!r}: the callable must return a tensor of the activation's shape "
                f"{tuple(activation.shape)}, got {got}"
            )
        return out

    def __repr__(self) -> str:
        return f"FromCallable({getattr(self.fn, '__name__', repr(self.fn))})"


def as_intervention(spec: Intervention | Callable | torch.Tensor) -> Intervention:
    """An :class:`Intervention` from an instance, a callable or a tensor (a :class:`Patch`)."""
    if isinstance(spec, Intervention):
        return spec
    if isinstance(spec, torch.Tensor | TensorDictBase):
        return Patch(spec)
    if callable(spec):
        return FromCallable(spec)
    raise TypeError(
        "an intervention is Ablate/Patch/Steer/Clamp, a callable (activation, td) -> "
        f"activation, or a tensor to patch in; got {spec!r}"
    )
