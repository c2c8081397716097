"""Sparse autoencoders on recorded activations, and steering by one of their features.

A :class:`SparseAutoencoder` writes an activation ``x [*batch, d_in]`` as a sparse,
non-negative code ``f [*batch, n_features]`` times a dictionary of unit-norm directions (the
decoder's columns, ``decoder[:, j]`` in activation space)::

    z     = ((x - b_dec) / input_scale) @ W_enc + b_enc       # (*batch, d_in) -> (*batch, F)
    f     = relu(z)                 (kind="relu", sparsity from an L1 penalty on f)
          = relu(topk(z, k))        (kind="topk", k active features at most, no penalty)
    x_hat = input_scale * f @ decoder.T + b_dec               # (*batch, F) -> (*batch, d_in)

``input_scale`` and ``b_dec`` are set from the data before training
(:class:`~tdhook_rl.concepts.sae_training.SAETrainer`): ``b_dec`` to the mean activation and
``input_scale`` so that centred activations have unit mean square per unit, which makes the
L1 coefficient mean the same thing at every layer. Feature values ``f`` are in those
normalized units; decoder columns are unit-norm in activation units.

:class:`SAEFeature` steers a policy through one feature inside :class:`~tdhook_rl.Intervened`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from tensordict import TensorDictBase
from torch import nn

from tdhook_rl.latent.interventions import Intervention

__all__ = ["SAEFeature", "SparseAutoencoder"]

KINDS = ("relu", "topk")


class SparseAutoencoder(nn.Module):
    """A ReLU (L1-penalized) or TopK sparse autoencoder with unit-norm decoder columns.

    Args:
        d_in: the width of the activations.
        n_features: the dictionary size (``>= 1``; often 4-32 times ``d_in``).
        kind: ``"relu"`` (sparsity from the L1 penalty ``l1 * sum_j f_j``) or ``"topk"``
            (the ``k`` largest pre-activations are kept, Gao et al. 2024; no penalty).
        k: active features per sample for ``kind="topk"``, ``1 <= k <= n_features``.
        l1: the L1 coefficient for ``kind="relu"`` (on normalized features).
        seed: seeds the initialization (decoder columns uniform on the sphere, encoder its
            transpose, biases zero).

    Examples:
        >>> sae = SparseAutoencoder(8, 32, kind="topk", k=4, seed=0)
        >>> f = sae.encode(torch.randn(5, 8))
        >>> f.shape, bool(((f > 0).sum(-1) <= 4).all())
        (torch.Size([5, 32]), True)
        >>> sae.decoder.norm(dim=0).allclose(torch.ones(32))
        True
    """

    input_scale: torch.Tensor  # a buffer: the RMS of the centred activations per unit

    def __init__(
        self,
        d_in: int,
        n_features: int,
        *,
        kind: Literal["relu", "topk"] = "relu",
        k: int | None = None,
        l1: float = 3e-2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("n_features", n_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "topk":
            if not isinstance(k, int) or not 1 <= k <= n_features:
                raise ValueError(
                    f"a TopK SAE needs 1 <= k <= n_features={n_features} active features, "
                    f"got k={k!r}; pick a k smaller than the dictionary"
                )
        elif k is not None:
            raise ValueError(f"k is for kind='topk'; a ReLU SAE got k={k!r} (use l1 instead)")
        if not isinstance(l1, int | float) or not 0 <= l1 < math.inf:
            raise ValueError(f"l1 must be a finite number >= 0, got {l1!r}")
        self.d_in, self.n_features, self.kind, self.k, self.l1 = d_in, n_features, kind, k, l1
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        decoder = torch.randn(d_in, n_features, generator=generator)
        decoder = decoder / decoder.norm(dim=0, keepdim=True)
        self.decoder = nn.Parameter(decoder)  # [d_in, F], unit-norm columns
        self.W_enc = nn.Parameter(decoder.clone())  # [d_in, F], tied at the start
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))

    # --- the model ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor's arguments (what :meth:`load` rebuilds the SAE from)."""
        return {
            "d_in": self.d_in,
            "n_features": self.n_features,
            "kind": self.kind,
            "k": self.k,
            "l1": self.l1,
            "seed": self.seed,
        }

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``z``: ``[*batch, d_in] -> [*batch, n_features]``, before ReLU/TopK."""
        self._check_input(x)
        x = x.to(self.W_enc.dtype)
        return ((x - self.b_dec) / self.input_scale) @ self.W_enc + self.b_enc

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Feature values from pre-activations: ReLU, or ReLU of the top ``k``."""
        if self.kind == "relu":
            return torch.relu(z)
        values, index = z.topk(self.k, dim=-1)  # type: ignore[arg-type]
        return torch.zeros_like(z).scatter(-1, index, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature values ``f``: ``[*batch, d_in] -> [*batch, n_features]``."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x_hat``: ``[*batch, n_features] -> [*batch, d_in]``."""
        return self.input_scale * (f @ self.decoder.T) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x`` (same shape)."""
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss on ``x [B, d_in]`` and its parts (scalars, normalized units).

        ``mse`` is the mean over samples and units of ``((x - x_hat) / input_scale)^2``;
        ``l1`` the mean over samples of ``sum_j f_j`` (decoder columns have unit norm, so this
        is Anthropic's ``sum_j f_j ||d_j||``); ``loss = mse + l1_coefficient * l1`` for a ReLU
        SAE and ``mse`` for a TopK one. ``per_sample`` is each sample's squared error
        (``[B]``, what dead-feature resampling draws from).
        """
        f = self.encode(x)
        error = (x.to(f.dtype) - self.decode(f)) / self.input_scale  # (B, d_in)
        per_sample = error.pow(2).sum(-1)
        mse = per_sample.mean() / self.d_in
        l1 = f.sum(-1).mean()
        loss = mse + self.l1 * l1 if self.kind == "relu" else mse
        return loss, {"mse": mse, "l1": l1, "per_sample": per_sample, "features": f}

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescales decoder columns to unit norm (after each optimizer step)."""
        self.decoder.div_(self.decoder.norm(dim=0, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Removes the part of the decoder's gradient along each column (which would only
        change the norm that :meth:`normalize_decoder_` resets)."""
        grad = self.decoder.grad
        if grad is not None:
            grad -= (grad * self.decoder).sum(0, keepdim=True) * self.decoder

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"a SparseAutoencoder reads a tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"the SAE was built for activations of width d_in={self.d_in}, got shape "
                f"{tuple(x.shape)}; record the site it was trained on"
            )

    # --- checkpoints ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Writes the configuration and the ``state_dict`` to ``path`` (``torch.save``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": "tdhook_rl.SparseAutoencoder/1", "config": self.config(),
                    "state_dict": state}, path)  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> SparseAutoencoder:
        """Rebuilds an SAE written by :meth:`save`, on ``device``.

        Examples:
            >>> import tempfile, os
            >>> sae = SparseAutoencoder(4, 8, seed=1)
            >>> path = sae.save(os.path.join(tempfile.mkdtemp(), "sae.pt"))
            >>> SparseAutoencoder.load(path).decoder.equal(sae.decoder)
            True
        """
        blob = torch.load(Path(path), map_location=device, weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != "tdhook_rl.SparseAutoencoder/1":
            raise ValueError(
                f"{path} is not a checkpoint written by SparseAutoencoder.save (no "
                "'tdhook_rl.SparseAutoencoder/1' format tag)"
            )
        sae = cls(**blob["config"]).to(device)
        sae.load_state_dict(blob["state_dict"])
        return sae


class SAEFeature(Intervention):
    """Steers the activation at a site along one SAE feature (for :class:`~tdhook_rl.Intervened`).

    Two modes, exactly one of ``alpha`` and ``value``:

    * ``alpha``: **adds** ``alpha * sae.decoder[:, feature]`` to the activation (``alpha`` in
      activation units, the decoder column has unit norm). It does not depend on how well the
      SAE reconstructs the activation.
    * ``value``: **clamps** the feature to ``value`` (normalized units, as ``sae.encode``
      returns them) and keeps the SAE's reconstruction error:
      ``a + (value - f_j(a)) * input_scale * decoder[:, j]``, i.e. ``a - x_hat + x_hat'`` where
      ``x_hat'`` decodes the code with ``f_j = value`` (so nothing but feature ``j`` changes).

    Args:
        sae: the SAE trained on this site's activations.
        feature: the feature's index ``j``.
        alpha, value: see above.

    Examples:
        >>> sae = SparseAutoencoder(3, 6, seed=0)
        >>> a = torch.zeros(2, 3)
        >>> out = SAEFeature(sae, 4, alpha=2.0)(a, None, "h")
        >>> out[0].allclose(2.0 * sae.decoder[:, 4].detach())
        True
    """

    def __init__(
        self,
        sae: SparseAutoencoder,
        feature: int,
        *,
        alpha: float | None = None,
        value: float | None = None,
    ) -> None:
        if not isinstance(sae, SparseAutoencoder):
            raise TypeError(f"SAEFeature needs a SparseAutoencoder, got {type(sae).__name__}")
        if not isinstance(feature, int) or not 0 <= feature < sae.n_features:
            raise IndexError(
                f"feature must be an index in [0, {sae.n_features}) for this SAE, got {feature!r}"
            )
        if (alpha is None) == (value is None):
            raise ValueError("give exactly one of alpha (add the direction) or value (clamp)")
        self.sae, self.feature = sae, feature
        self.alpha = None if alpha is None else float(alpha)
        self.value = None if value is None else float(value)

    def __call__(self, activation: torch.Tensor, td: TensorDictBase, site: str) -> torch.Tensor:
        if activation.shape[-1:] != (self.sae.d_in,):
            raise ValueError(
                f"site {site!r}: the SAE reads activations of width {self.sae.d_in}, the site's "
                f"activation has shape {tuple(activation.shape)}"
            )
        if self.sae.decoder.device != activation.device:
            raise ValueError(
                f"site {site!r}: the SAE is on {self.sae.decoder.device} but the activation is "
                f"on {activation.device}; move it once with intervention.to("
                f"{str(activation.device)!r})"
            )
        with torch.no_grad():
            direction = self.sae.decoder[:, self.feature].detach().to(activation.dtype)
            if self.value is None:
                return activation + float(self.alpha or 0.0) * direction
            current = self.sae.encode(activation.detach())[..., self.feature : self.feature + 1]
            shift = (self.value - current) * self.sae.input_scale
        return activation + shift.to(activation.dtype) * direction

    def to(self, device: torch.device | str) -> SAEFeature:
        self.sae.to(device)
        return self

    def __repr__(self) -> str:
        how = f"alpha={self.alpha}" if self.alpha is not None else f"value={self.value}"
        return f"SAEFeature(feature={self.feature}, {how})"
