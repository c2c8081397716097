"""SmoothGrad (Smilkov et al., 2017) around any attribution method, noise samples batched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution._seeded import Seeded
from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.saliency import Saliency

KINDS: tuple[str, ...] = ("smoothgrad", "smoothgrad_sq", "vargrad")


class SmoothGrad(Seeded, AttributionMethod):
    """Averages a method's attributions over Gaussian-perturbed copies of the inputs.

    The ``n_samples`` noisy copies become one extra batch dimension, so the inner method
    still runs one batched pass. Noise comes from the method's own generator (seeded), so
    wrapping a policy never changes the actions it samples.

    Args:
        method: the inner method (default: signed ``Saliency(abs=False)``).
        n_samples: noisy copies per input.
        stdev: standard deviation of the noise, in input units (as captum's ``stdevs``).
        kind: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or
            ``"vargrad"`` (variance), as in captum's ``NoiseTunnel``.
        seed: seed of the noise generator.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(net, SmoothGrad(n_samples=8, stdev=0.1),
        ...                            inputs=["observation"], targets={"value": "state_value"})
        >>> out = explained(TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))
        >>> out["attribution", "value", "observation"].shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        method: AttributionMethod | None = None,
        n_samples: int = 16,
        stdev: float = 0.1,
        kind: str = "smoothgrad",
        seed: int = 0,
    ) -> None:
        method = Saliency(abs=False) if method is None else method
        if not isinstance(method, AttributionMethod):
            raise TypeError(f"SmoothGrad wraps an attribution method, got {method!r}")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if not stdev >= 0:
            raise ValueError(f"stdev must be >= 0, got {stdev!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown SmoothGrad kind {kind!r}; choose one of {list(KINDS)}")
        self.method = method
        self.n_samples = n_samples
        self.stdev = float(stdev)
        self.kind = kind
        self._seeded(seed)
        self.context_keys = list(getattr(method, "context_keys", []))

    def check_inputs(self, inputs: Sequence[NestedKey]) -> None:
        self.method.check_inputs(inputs)

    def check(self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase) -> None:
        self.method.check(inputs, td)

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        n = self.n_samples
        noisy = {}
        for k, x in inputs.items():
            # (*batch, *f) -> (n_samples, *batch, *f)
            noise = torch.randn(
                (n, *x.shape), generator=self.generator(x.device), dtype=x.dtype, device=x.device
            )
            noisy[k] = x + self.stdev * noise
        inner = self.method.attribute(engine.expand(n), noisy).attributions  # (n_t, n, *batch, *f)
        if self.kind == "smoothgrad":
            out = {k: a.mean(1) for k, a in inner.items()}
        elif self.kind == "smoothgrad_sq":
            out = {k: (a * a).mean(1) for k, a in inner.items()}
        else:
            out = {k: (a * a).mean(1) - a.mean(1) ** 2 for k, a in inner.items()}
        return AttributionResult(out)

    def __repr__(self) -> str:
        return (
            f"SmoothGrad({self.method!r}, n_samples={self.n_samples}, stdev={self.stdev}, "
            f"kind={self.kind!r}, seed={self.seed})"
        )
