"""Training sparse autoencoders on activations streamed from a tensor, a rollout or a buffer.

:class:`SAETrainer` runs Adam on :meth:`SparseAutoencoder.loss
<tdhook_rl.concepts.sae.SparseAutoencoder.loss>`, keeping decoder columns unit-norm (the
gradient along each column is removed before a step, the columns are rescaled after it), and
resamples dead features (:class:`Resampling`). :func:`activation_batches` reads the data in
batches on the data's device; :func:`sae_metrics` scores an SAE in one streamed pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tqdm.auto import tqdm

from tdhook_rl.concepts.sae import SparseAutoencoder
from tdhook_rl.core.keys import as_key

__all__ = ["Resampling", "SAEHistory", "SAETrainer", "activation_batches", "sae_metrics"]

Batches = Callable[[], Iterator[torch.Tensor]]


def activation_batches(
    data: Any,
    key: NestedKey | None = None,
    batch_size: int = 1024,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Batches:
    """Returns a function that starts one pass over ``data``, yielding ``[b, d]`` batches.

    Args:
        data: a tensor ``[*batch, d]``; a TensorDict (a rollout) holding it at ``key``; or a
            TorchRL ``ReplayBuffer`` (memory-mapped or not) whose entries hold it at ``key``.
        key: where the activations are, e.g. ``("activations", "actor h2")`` (not for a
            tensor).
        batch_size: rows per batch.
        shuffle: a tensor or TensorDict is read in a new random order each pass (drawn from
            ``generator``); a buffer is then *sampled*, ``len(buffer) // batch_size`` times per
            pass, with ``buffer.sample`` (its sampler draws from torch's global generator:
            seed it with ``torch.manual_seed``). Without it, rows are read in order (a buffer
            in slices ``buffer[i:i + batch_size]``).
        generator: the shuffling's generator (CPU).
        device: where batches go; by default the data's (a buffer's storage device).

    Examples:
        >>> start = activation_batches(torch.randn(10, 3), batch_size=4, shuffle=False)
        >>> [tuple(b.shape) for b in start()]
        [(4, 3), (4, 3), (2, 3)]
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, torch.Tensor | TensorDictBase):
        flat = _rows(data, key)
        if flat.shape[0] == 0:
            raise ValueError("the activations hold no samples (a batch of size 0)")
        if device is not None:
            flat = flat.to(device)

        def tensor_pass() -> Iterator[torch.Tensor]:
            n = flat.shape[0]
            if shuffle:
                order = torch.randperm(n, generator=generator).to(flat.device)
                for i in range(0, n, batch_size):
                    yield flat[order[i : i + batch_size]]
            else:
                for i in range(0, n, batch_size):
                    yield flat[i : i + batch_size]

        return tensor_pass
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__") and hasattr(data, "sample")):
        raise TypeError(
            "data must be a tensor [*batch, d], a TensorDict with the activations at key, or a "
            f"torchrl ReplayBuffer; got {type(data).__name__}"
        )
    if key is None:
        raise ValueError("reading a replay buffer needs the activations' key, e.g. "
                         "key=('activations', 'actor h2')")  # fmt: skip
    if len(data) == 0:
        raise ValueError("the replay buffer is empty: extend it with recorded rollouts first")

    def buffer_pass() -> Iterator[torch.Tensor]:
        n = len(data)
        if shuffle:
            for _ in range(max(n // batch_size, 1)):
                yield _to(_rows(data.sample(batch_size), key), device)
        else:
            for i in range(0, n, batch_size):
                yield _to(_rows(data[i : i + batch_size], key), device)

    return buffer_pass


def _rows(data: torch.Tensor | TensorDictBase, key: NestedKey | None) -> torch.Tensor:
    if isinstance(data, TensorDictBase):
        if key is None:
            raise ValueError("reading a TensorDict needs the activations' key, e.g. "
                             "key=('activations', 'actor h2')")  # fmt: skip
        key = as_key(key, "activation key")
        value = data.get(key, None)
        if value is None:
            raise KeyError(f"the data has no entry {key!r}; its keys: {list(data.keys(True))}")
        # (*batch, *unit_shape) -> (prod(batch), units): a conv map's units are flattened
        return value.reshape(data.batch_size.numel(), -1)
    elif key is not None:
        raise ValueError("key is for a TensorDict or a replay buffer; a tensor is read as is")
    if data.ndim == 0:
        raise ValueError("activations must be [*batch, d], got a scalar")
    return data.reshape(-1, data.shape[-1]) if data.ndim != 2 else data


def _to(x: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    return x if device is None else x.to(device, non_blocking=True)


@dataclass(frozen=True)
class Resampling:
    """Dead-feature resampling, a simplified form of Anthropic's ("Towards Monosemanticity",
    2023, "Neuron Resampling").

    Every ``check_every`` steps, the features that have not fired (``f_j > 0``) on any batch
    of the last ``dead_after`` steps are re-initialised from high-loss inputs of the current
    batch: for each dead feature one sample is drawn with probability proportional to its
    squared reconstruction error squared (``loss^2``, as in the paper); the feature's decoder
    column becomes that sample's normalized residual ``x - x_hat`` (the paper uses the input
    itself; the residual points at what the dictionary misses), its encoder column the same
    direction scaled to ``encoder_scale`` times the mean encoder norm of the live features,
    its encoder bias zero, and Adam's moments for those columns are reset. The paper instead
    resamples at a few fixed steps from losses over a large sample of the data.
    """

    dead_after: int = 500
    check_every: int = 250
    encoder_scale: float = 0.2

    def __post_init__(self) -> None:
        if self.dead_after < 1 or self.check_every < 1 or not self.encoder_scale > 0:
            raise ValueError(
                f"Resampling needs dead_after >= 1, check_every >= 1 and encoder_scale > 0; got "
                f"{self.dead_after}, {self.check_every}, {self.encoder_scale}"
            )


DEFAULT_RESAMPLING = Resampling()


@dataclass
class SAEHistory:
    """What a :meth:`SAETrainer.fit` did: the step of every logged point, the loss and MSE
    there (normalized units), the fraction of features dead there, and the number of features
    resampled at each resampling."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)


class SAETrainer:
    """Trains a :class:`~tdhook_rl.concepts.sae.SparseAutoencoder` with Adam.

    Args:
        sae: the SAE (its device is where training runs; batches are moved there).
        lr: Adam's learning rate.
        resampling: dead-feature resampling (by default ``Resampling()``: features that did not
            fire for 500 steps, checked every 250), or ``None`` for none.
        seed: seeds shuffling and resampling; with the SAE's own ``seed`` a run on the same
            data and device is repeated exactly.
        progress: a tqdm progress bar; ``None`` shows it only when stderr is a terminal.
        log_every: steps between logged points (the bar's loss is refreshed then too; these
            are the only host synchronisations of the loop besides resampling checks).

    Examples:
        >>> x = torch.relu(torch.randn(512, 8))
        >>> sae = SparseAutoencoder(8, 16, kind="topk", k=2)
        >>> history = SAETrainer(sae, progress=False).fit(x, steps=100, batch_size=64)
        >>> history.steps, sae_metrics(sae, x)["l0"] <= 2
        ([50, 100], True)
    """

    def __init__(
        self,
        sae: SparseAutoencoder,
        *,
        lr: float = 1e-3,
        resampling: Resampling | None = DEFAULT_RESAMPLING,
        seed: int = 0,
        progress: bool | None = None,
        log_every: int = 50,
    ) -> None:
        if not isinstance(sae, SparseAutoencoder):
            raise TypeError(f"SAETrainer trains a SparseAutoencoder, got {type(sae).__name__}")
        if not lr > 0 or log_every < 1:
            raise ValueError(f"need lr > 0 and log_every >= 1, got lr={lr!r}, {log_every!r}")
        self.sae, self.lr, self.resampling, self.seed = sae, float(lr), resampling, seed
        self.progress, self.log_every = progress, log_every
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
        self.step = 0
        self._initialised = False
        device = sae.decoder.device
        self._generator = torch.Generator(device=device).manual_seed(seed + 1)
        self._since_fired = torch.zeros(sae.n_features, dtype=torch.long, device=device)

    def fit(
        self,
        data: Any,
        key: NestedKey | None = None,
        *,
        batch_size: int = 1024,
        epochs: int = 1,
        steps: int | None = None,
        shuffle: bool = True,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None,
    ) -> SAEHistory:
        """Trains on ``data`` (see :func:`activation_batches`) and returns the history.

        Args:
            data, key, batch_size, shuffle: as :func:`activation_batches` reads them.
            epochs: passes over the data (when ``steps`` is ``None``).
            steps: optimizer steps in all, cycling through the data as often as needed.
            checkpoint: a path the SAE is saved to (:meth:`SparseAutoencoder.save`) every
                ``checkpoint_every`` steps and at the end; the optimizer is not saved.
            checkpoint_every: steps between checkpoints (default: only at the end).

        Raises:
            ValueError: on constant activations (nothing for a dictionary to explain).
        """
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be a positive int or None, got {steps!r}")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        shuffle_gen = torch.Generator().manual_seed(self.seed)
        device = self.sae.decoder.device
        start = activation_batches(
            data, key, batch_size, shuffle=shuffle, generator=shuffle_gen, device=device
        )
        if not self._initialised:
            self._initialise(start)
        history = SAEHistory()
        total = steps if steps is not None else None
        bar = tqdm(total=total, desc="SAE", unit="step", disable=_no_bar(self.progress))
        try:
            done, epoch = 0, 0
            while (steps is None and epoch < epochs) or (steps is not None and done < steps):
                for x in start():
                    self._train_step(x.to(self.sae.decoder.dtype), history, bar)
                    done += 1
                    bar.update(1)
                    if checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
                        self.sae.save(checkpoint)
                    if steps is not None and done >= steps:
                        break
                epoch += 1
        finally:
            bar.close()
        if checkpoint is not None:
            self.sae.save(checkpoint)
        return history

    @torch.no_grad()
    def _initialise(self, start: Batches) -> None:
        """``b_dec`` = the mean activation, ``input_scale`` = the RMS of centred units, from
        one pass (float64 sums)."""
        n, total, squares = 0, None, None
        for x in start():
            x = x.double()
            n += x.shape[0]
            s, q = x.sum(0), x.pow(2).sum(0)
            total = s if total is None else total + s
            squares = q if squares is None else squares + q
        assert total is not None and squares is not None  # activation_batches yields >= 1
        mean = total / n
        var = (squares / n - mean.pow(2)).clamp_min(0).mean()
        if not var > 1e-12 * (1 + mean.pow(2).mean()):
            raise ValueError(
                "the activations are constant (every sample is the same vector): an SAE has "
                "nothing to explain; record a site whose activations vary (or more states)"
            )
        self.sae.b_dec.copy_(mean.to(self.sae.b_dec))
        self.sae.input_scale.copy_(var.sqrt().to(self.sae.input_scale))
        self._initialised = True

    def _train_step(self, x: torch.Tensor, history: SAEHistory, bar: Any) -> None:
        sae = self.sae
        with torch.inference_mode(False), torch.enable_grad():
            loss, parts = sae.loss(x.clone())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.project_decoder_grad_()
            self.optimizer.step()
        sae.normalize_decoder_()
        self.step += 1
        with torch.no_grad():
            fired = (parts["features"] > 0).any(0)
            self._since_fired = torch.where(fired, 0, self._since_fired + 1)
        rs = self.resampling
        if rs is not None and self.step % rs.check_every == 0:
            dead = self._since_fired >= rs.dead_after
            if bool(dead.any()):
                history.resampled.append(int(dead.sum()))
                self._resample(dead, x, parts["per_sample"].detach())
        if self.step % self.log_every == 0:
            history.steps.append(self.step)
            history.loss.append(float(loss.detach()))
            history.mse.append(float(parts["mse"].detach()))
            history.dead_fraction.append(float((self._since_fired >= _window(rs)).float().mean()))
            bar.set_postfix(loss=f"{history.loss[-1]:.4g}", dead=f"{history.dead_fraction[-1]:.2f}")

    @torch.no_grad()
    def _resample(self, dead: torch.Tensor, x: torch.Tensor, per_sample: torch.Tensor) -> None:
        sae, rs = self.sae, self.resampling
        assert rs is not None
        index = dead.nonzero().squeeze(1)  # (m,)
        weights = per_sample.double().pow(2)
        if not weights.sum() > 0:
            weights = torch.ones_like(weights)
        rows = torch.multinomial(
            weights, index.numel(), replacement=True, generator=self._generator
        )
        residual = (x[rows] - sae(x[rows])) / sae.input_scale  # (m, d_in)
        norm = residual.norm(dim=-1, keepdim=True)
        fallback = torch.randn(residual.shape, generator=self._generator, device=x.device)
        residual = torch.where(norm > 1e-8, residual, fallback.to(residual.dtype))
        direction = (residual / residual.norm(dim=-1, keepdim=True)).T  # (d_in, m)
        alive = ~dead
        enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else 1.0
        sae.decoder[:, index] = direction
        sae.W_enc[:, index] = direction * rs.encoder_scale * enc_norm
        sae.b_enc[index] = 0.0
        for param, dim in ((sae.decoder, 1), (sae.W_enc, 1), (sae.b_enc, 0)):
            state = self.optimizer.state.get(param, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in state:
                    state[name].index_fill_(dim, index, 0.0)
        self._since_fired[index] = 0


def _window(rs: Resampling | None) -> int:
    return rs.dead_after if rs is not None else 500


def _no_bar(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # tqdm: None = off when not a TTY


@torch.no_grad()
def sae_metrics(
    sae: SparseAutoencoder, data: Any, key: NestedKey | None = None, batch_size: int = 4096
) -> dict[str, float]:
    """Scores an SAE on ``data`` (read in order, as :func:`activation_batches` does).

    Returns:
        ``mse``: mean squared error per unit, in activation units; ``fve``: the fraction of
        variance explained, ``1 - SSE / SST`` (SST about the data's mean, all units pooled);
        ``l0``: mean number of active features per sample; ``dead_fraction``: the fraction of
        features that never fire on the data; ``n``: the number of samples.

    Examples:
        >>> sae = SparseAutoencoder(4, 8)
        >>> sorted(sae_metrics(sae, torch.randn(20, 4)))
        ['dead_fraction', 'fve', 'l0', 'mse', 'n']
    """
    device = sae.decoder.device
    start = activation_batches(data, key, batch_size, shuffle=False, device=device)
    n = 0
    sse = l0 = torch.zeros((), dtype=torch.float64, device=device)
    s = q = fired = None
    for x in start():
        x = x.to(sae.decoder.dtype)
        f = sae.encode(x)
        xd = x.double()
        sse_b = (x - sae.decode(f)).double().pow(2).sum()
        sse, l0, n = sse + sse_b, l0 + (f > 0).sum(), n + x.shape[0]
        s = xd.sum(0) if s is None else s + xd.sum(0)
        q = xd.pow(2).sum(0) if q is None else q + xd.pow(2).sum(0)
        fired = (f > 0).any(0) if fired is None else fired | (f > 0).any(0)
    assert s is not None and q is not None and fired is not None
    sst = (q - s.pow(2) / n).sum()
    return {
        "mse": float(sse / (n * sae.d_in)),
        "fve": float(1 - sse / sst) if sst > 0 else float("nan"),
        "l0": float(l0 / n),
        "dead_fraction": float((~fired).double().mean()),
        "n": n,
    }
