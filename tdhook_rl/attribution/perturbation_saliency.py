"""Perturbation saliency of image inputs (Greydanus et al., 2018, "Visualizing and
Understanding Atari Agents"): how much blurring a small region changes each target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution._perturb import check_chunk_size
from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.core.keys import as_key


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blurs the last two dimensions of ``x`` with a Gaussian of standard deviation ``sigma``
    (truncated at 4 sigma, edges replicated: scipy's ``gaussian_filter(mode="nearest")``)."""
    if sigma == 0:
        return x.clone()
    half = int(4 * sigma + 0.5)  # scipy's truncate=4.0
    t = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    flat = F.conv2d(F.pad(flat, (half, half, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, half, half), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(x.shape)


def centres(size: int, stride: int, device: torch.device) -> torch.Tensor:
    """The mask centres along one side: ``0, stride, 2 stride, ...`` below ``size``."""
    return torch.arange(0, size, stride, device=device)


def gaussian_masks(
    h: int, w: int, radius: float, stride: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``(n_rows * n_cols, h, w)`` masks, a Gaussian of standard deviation ``radius`` and peak
    1 centred on each point of the grid (Greydanus's blurred disk of radius ``radius``)."""
    rows = torch.arange(h, device=device, dtype=dtype)
    cols = torch.arange(w, device=device, dtype=dtype)
    dy = rows[None, :] - centres(h, stride, device)[:, None].to(dtype)  # (n_i, h)
    dx = cols[None, :] - centres(w, stride, device)[:, None].to(dtype)  # (n_j, w)
    gy = torch.exp(-(dy**2) / (2 * radius**2))
    gx = torch.exp(-(dx**2) / (2 * radius**2))
    return (gy[:, None, :, None] * gx[None, :, None, :]).reshape(-1, h, w)


def upsample(scores: torch.Tensor, h: int, w: int, stride: int) -> torch.Tensor:
    """Scores on the centre grid ``(..., n_i, n_j)`` -> ``(..., h, w)``: bilinear between
    centres (exact at them), constant past the last centre."""
    n_i, n_j = scores.shape[-2:]
    flat = scores.reshape(-1, 1, n_i, n_j)
    size = ((n_i - 1) * stride + 1, (n_j - 1) * stride + 1)
    if n_i > 1 or n_j > 1:
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=True)
    flat = F.pad(flat, (0, w - flat.shape[-1], 0, h - flat.shape[-2]), mode="replicate")
    return flat.reshape(*scores.shape[:-2], h, w)


class PerturbationSaliency(AttributionMethod):
    """``1/2 (f(I) - f(I'))^2`` per target, ``I' = I (1 - M) + blur(I) M`` for a Gaussian mask
    ``M`` centred every ``stride`` pixels, upsampled to the image.

    For inputs shaped ``[..., C, H, W]`` per sample (any leading feature dimensions, e.g.
    channels or stacked frames, are blurred and masked together): the mask of standard
    deviation ``radius`` (peak 1) is placed at every ``stride``-th pixel of ``H x W``, the
    region under it is replaced by the image blurred with a Gaussian of ``sigma``, and the
    score of a target is half the squared change of its value. Scores are computed at the
    centres and upsampled bilinearly to ``H x W``, then repeated over the leading feature
    dimensions. Greydanus et al. used ``radius=5, stride=5, sigma=3`` on 80x80 Atari frames,
    and the squared norm of the change of the whole logit vector; here every target is a
    scalar, so each logit (or the value) gets its own map. Scores are unsigned.

    All placements (of every image key, one key at a time with the others at their values)
    go through one forward (one per ``chunk_size`` placements) for all samples and targets.

    **Recurrent agents.** A policy with memory (TorchRL's ``LSTMModule``/``GRUModule`` in
    step mode) reads its carried state from the TensorDict (``recurrent_state_h`` and
    ``recurrent_state_c``, or ``recurrent_state``, with ``is_init``); every perturbed forward
    of step ``t`` is given that step's own state, unchanged, so only the frame differs
    (Greydanus et al.'s code likewise restores the step's ``(h, c)`` for every mask). To
    measure how much the heads lean on the memory, name state entries in ``memory`` and
    among ``Attributed``'s inputs: each gets one more perturbation, the state multiplied by
    ``1 - memory_blur`` (their ``blur_memory``, applied to the LSTM's cell state; ``1``
    erases it), in the same forward; its score ``1/2 (f(I, m) - f(I, m'))^2`` is written as
    the state's attribution, repeated over its entries. (Whole trajectories read by a
    recurrent-mode module, ``sample_dims=1``, are blurred at the same place in every frame.)

    Args:
        radius: standard deviation of the mask, in pixels.
        stride: pixels between mask centres.
        sigma: standard deviation of the blur, in pixels.
        chunk_size: at most this many placements per forward; ``None`` for all at once.
        memory: recurrent-state entries (attributed inputs) to blur, e.g.
            ``["recurrent_state_c"]``; their shape is free (not an image).
        memory_blur: the fraction of the state removed, in ``[0, 1]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Sequential(torch.nn.Flatten(-3),
        ...                        torch.nn.Linear(2 * 12 * 12, 1)), ["pixels"], ["state_value"])
        >>> explained = thr.Attributed(net, PerturbationSaliency(radius=2, stride=3, sigma=1),
        ...                            inputs=["pixels"], targets={"value": "state_value"})
        >>> out = explained(TensorDict(pixels=torch.rand(4, 2, 12, 12), batch_size=[4]))
        >>> out["attribution", "value", "pixels"].shape
        torch.Size([4, 2, 12, 12])

        The memory of a recurrent policy, blurred too:

        >>> from tensordict.nn import TensorDictSequential
        >>> from torchrl.modules import LSTMModule
        >>> encoder = TensorDictModule(torch.nn.Flatten(-3), ["pixels"], ["embed"])
        >>> lstm = LSTMModule(input_size=2 * 12 * 12, hidden_size=8, in_key="embed",
        ...                   out_key="features")
        >>> head = TensorDictModule(torch.nn.Linear(8, 1), ["features"], ["state_value"])
        >>> explained = thr.Attributed(
        ...     TensorDictSequential(encoder, lstm, head),
        ...     PerturbationSaliency(radius=2, stride=3, sigma=1, memory=["recurrent_state_c"]),
        ...     inputs=["pixels", "recurrent_state_c"], targets={"value": "state_value"})
        >>> step = TensorDict(pixels=torch.rand(4, 2, 12, 12),
        ...                   recurrent_state_h=torch.randn(4, 1, 8),
        ...                   recurrent_state_c=torch.randn(4, 1, 8),
        ...                   is_init=torch.zeros(4, 1, dtype=torch.bool), batch_size=[4])
        >>> explained(step)["attribution", "value", "recurrent_state_c"].shape
        torch.Size([4, 1, 8])
    """

    #: the scores are magnitudes (:func:`tdhook_rl.attribution.noise.is_signed` reads it)
    abs: ClassVar[bool] = True

    def __init__(
        self,
        radius: float = 5.0,
        stride: int = 5,
        sigma: float = 3.0,
        chunk_size: int | None = None,
        memory: Sequence[NestedKey] = (),
        memory_blur: float = 1.0,
    ) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be > 0, got {radius!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.radius = float(radius)
        self.stride = stride
        self.sigma = float(sigma)
        self.chunk_size = check_chunk_size(chunk_size)
        if isinstance(memory, str):
            memory = [memory]
        self.memory = [as_key(k, "memory key") for k in memory]
        if not 0 <= memory_blur <= 1:
            raise ValueError(
                f"memory_blur must be in [0, 1] (1 erases the state), got {memory_blur!r}"
            )
        self.memory_blur = float(memory_blur)

    def check_inputs(self, inputs: Sequence[NestedKey]) -> None:
        for key in self.memory:
            if key not in inputs:
                raise ValueError(
                    f"memory entry {key!r} is not an attributed input (the inputs are "
                    f"{list(inputs)}); add it to Attributed(inputs=...) to blur it"
                )

    def check(self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase) -> None:
        for key, x in inputs.items():
            if key in self.memory:
                continue
            feature = x.shape[td.batch_dims :]
            if len(feature) < 2:
                raise ValueError(
                    f"PerturbationSaliency blurs images: input {key!r} has feature shape "
                    f"{tuple(feature)}, expected [..., H, W] (e.g. [C, H, W])"
                )

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        batch_dims = len(engine.batch_shape)
        plans = {}
        for key, x in inputs.items():
            if key in self.memory:  # one perturbation: the whole state scaled
                plans[key] = (x.new_ones(1), x * (1 - self.memory_blur))
                continue
            h, w = x.shape[-2:]
            masks = gaussian_masks(h, w, self.radius, self.stride, x.device, x.dtype)  # (P_k, h, w)
            plans[key] = (masks, gaussian_blur(x, self.sigma))
        keys = list(plans)
        sizes = [plans[k][0].shape[0] for k in keys]
        n_p = sum(sizes)
        chunk = self.chunk_size or n_p
        scores = []
        with torch.no_grad():
            full = engine.evaluate(dict(inputs), lead=())  # (n_t, *batch)
            for start in range(0, n_p, chunk):
                stop = min(start + chunk, n_p)
                values = {}
                for k, offset, size in zip(keys, _offsets(sizes), sizes, strict=True):
                    x = inputs[k]
                    lo, hi = max(start, offset) - offset, min(stop, offset + size) - offset
                    # rows of this chunk that perturb key k: (c, *plane), zero elsewhere
                    plane = plans[k][0].shape[1:]  # (h, w), or () for a memory entry
                    m = x.new_zeros(stop - start, *plane)
                    if lo < hi:
                        m[lo + offset - start : hi + offset - start] = plans[k][0][lo:hi]
                    # (c, *plane) -> (c, *[1] * (batch_dims + other feature dims), *plane)
                    m = m.reshape(stop - start, *[1] * (x.ndim - len(plane)), *plane)
                    values[k] = x + (plans[k][1] - x) * m  # I (1 - M) + blur(I) M
                y = engine.evaluate(values, lead=(stop - start,))  # (n_t, c, *batch)
                scores.append(0.5 * (full[:, None] - y) ** 2)
        score = torch.cat(scores, 1)  # (n_t, P, *batch)
        out = {}
        for k, offset, size in zip(keys, _offsets(sizes), sizes, strict=True):
            x = inputs[k]
            if k in self.memory:  # (n_t, *batch) -> repeated over the state's entries
                part = score[:, offset].reshape(score.shape[0], *engine.batch_shape)
                part = part.reshape(*part.shape, *[1] * (x.ndim - batch_dims))
                out[k] = part.expand(part.shape[0], *x.shape).contiguous()
                continue
            h, w = x.shape[-2:]
            n_i, n_j = len(range(0, h, self.stride)), len(range(0, w, self.stride))
            part = score[:, offset : offset + size].movedim(1, -1)  # (n_t, *batch, P_k)
            part = part.reshape(*part.shape[:-1], n_i, n_j)
            image = upsample(part, h, w, self.stride)  # (n_t, *batch, h, w)
            lead = x.shape[batch_dims:-2]  # leading feature dims, e.g. channels
            image = image.reshape(image.shape[0], *engine.batch_shape, *[1] * len(lead), h, w)
            out[k] = image.expand(image.shape[0], *x.shape).contiguous()
        return AttributionResult(out)

    def __repr__(self) -> str:
        return (
            f"PerturbationSaliency(radius={self.radius}, stride={self.stride}, "
            f"sigma={self.sigma}, chunk_size={self.chunk_size}"
            + (f", memory={self.memory}, memory_blur={self.memory_blur})" if self.memory else ")")
        )


def _offsets(sizes: Sequence[int]) -> list[int]:
    out, total = [], 0
    for size in sizes:
        out.append(total)
        total += size
    return out
