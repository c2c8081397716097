"""Sparse-autoencoder training throughput, in samples per second.

Activations with planted sparse features (sparse codes times a random unit dictionary plus
noise, ``d_in`` units), an SAE of ``n_features`` features, Adam, batches of 1024. One timed
call is ``steps`` optimizer steps. Contestants:

* ``tdhook_rl``: ``SAETrainer(sae).fit(x, steps=...)`` from a tensor on the device, with
  dead-feature resampling checks and the unit-norm decoder constraint;
* ``tdhook_rl-memmap``: the same from a memory-mapped TorchRL ``ReplayBuffer`` read in
  order (slices copied to the device), the recorded-rollout path;
* ``floor``: a hand-written loop doing the same arithmetic (encode, decode, loss, backward,
  projected decoder gradient, Adam step, renormalization) with none of the bookkeeping.

There is no agreement check (training runs are not compared output for output); ``samples/s``
is ``steps * batch / median seconds``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from benchmarks.harness import (
    BenchmarkResult,
    CaseResult,
    ContestantResult,
    RunConfig,
    Tolerance,
    time_interleaved,
)

NAME = "sae"
BATCH = 1024


def _activations(n: int, d_in: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(d_in, 4 * d_in, generator=g)
    dictionary /= dictionary.norm(dim=0)
    codes = (torch.rand(n, 4 * d_in, generator=g) < 0.02) * torch.rand(n, 4 * d_in, generator=g)
    return codes @ dictionary.T + 0.01 * torch.randn(n, d_in, generator=g)


def _floor(
    x: torch.Tensor, n_features: int, kind: Literal["relu", "topk"], k: int, steps: int
) -> Callable[[], torch.Tensor]:
    """The same training arithmetic as SAETrainer, written directly."""
    from tdhook_rl.concepts import SparseAutoencoder

    sae = SparseAutoencoder(x.shape[1], n_features, kind=kind, k=k if kind == "topk" else None)
    sae = sae.to(x.device)
    dec, enc, b_enc, b_dec = sae.decoder, sae.W_enc, sae.b_enc, sae.b_dec
    opt = torch.optim.Adam([dec, enc, b_enc, b_dec], lr=1e-3)

    def train() -> torch.Tensor:
        for i in range(steps):
            batch = x[(i * BATCH) % (len(x) - BATCH) :][:BATCH]
            z = (batch - b_dec) @ enc + b_enc
            if kind == "topk":
                values, index = z.topk(k, dim=-1)
                f = torch.zeros_like(z).scatter(-1, index, torch.relu(values))
            else:
                f = torch.relu(z)
            error = batch - (f @ dec.T + b_dec)
            loss = error.pow(2).mean() + (1e-2 * f.sum(-1).mean() if kind == "relu" else 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                grad = dec.grad
                assert grad is not None
                grad -= (grad * dec).sum(0, keepdim=True) * dec
                opt.step()
                dec.div_(dec.norm(dim=0, keepdim=True))
        return dec

    return train


def run(config: RunConfig) -> BenchmarkResult:
    from tensordict import TensorDict
    from torchrl.data import LazyMemmapStorage, ReplayBuffer

    from tdhook_rl.concepts import Resampling, SAETrainer, SparseAutoencoder

    device = config.device
    steps = 20 if config.quick else 100
    warmup, repeats = (1, 3) if config.quick else (1, 5)
    shapes: list[tuple[int, int, Literal["relu", "topk"]]] = [(64, 512, "relu"), (64, 512, "topk")]
    if not config.quick:
        shapes.append((256, 2048, "topk"))
    folder = Path(tempfile.mkdtemp(prefix="tdhook_rl_sae_bench_"))
    cases: list[CaseResult] = []
    try:
        for d_in, n_features, kind in shapes:
            k = 32
            # the large case on a CPU: fewer steps per call (one call is ~0.1 s per step)
            case_steps = 20 if d_in >= 256 and device.type == "cpu" else steps
            n = case_steps * BATCH
            x = _activations(n, d_in, config.seed)
            buffer = ReplayBuffer(
                storage=LazyMemmapStorage(n, scratch_dir=folder / f"case{len(cases)}")
            )
            buffer.extend(TensorDict(h=x, batch_size=[n]))
            x = x.to(device)
            extra = {"k": k} if kind == "topk" else {"l1": 1e-2}

            def ours(
                data, key=None, kind=kind, extra=extra, d_in=d_in, nf=n_features, n=case_steps
            ):
                sae = SparseAutoencoder(d_in, nf, kind=kind, **extra).to(device)
                trainer = SAETrainer(sae, resampling=Resampling(), progress=False)

                def train() -> torch.Tensor:
                    trainer.fit(data, key, batch_size=BATCH, steps=n, shuffle=False)
                    return sae.decoder

                return train

            operations: dict[str, Callable[[], torch.Tensor]] = {
                "tdhook_rl": ours(x),
                "tdhook_rl-memmap": ours(buffer, "h"),
                "floor": _floor(x, n_features, kind, k, case_steps),
            }
            errors: dict[str, str] = {}
            timings = time_interleaved(operations, warmup, repeats, device, errors=errors)
            rows = []
            for name in operations:
                row = ContestantResult(
                    name, "error" if name in errors else "ok", errors.get(name, "")
                )
                row.timing = timings.get(name)
                if row.timing is not None:
                    row.extras = {"samples/s": case_steps * BATCH / row.timing.median_s}
                rows.append(row)
            label = f"{kind}, d_in {d_in}, {n_features} features" + (
                f", k {k}" if kind == "topk" else ""
            )
            params = {"d_in": d_in, "n_features": n_features, "kind": kind, "steps": case_steps}
            cases.append(CaseResult(label, params, rows))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return BenchmarkResult(
        name=NAME,
        title="Sparse-autoencoder training throughput",
        description=(
            f"{steps} Adam steps of batch {BATCH} per timed call (20 for d_in 256 on a CPU). "
            "`tdhook_rl`: `SAETrainer.fit` "
            "from a tensor on the device (with resampling checks); `tdhook_rl-memmap`: from a "
            "memory-mapped `ReplayBuffer` read in slices; `floor`: the same arithmetic in a bare "
            "loop. `samples/s`: samples per second at the median."
        ),
        settings={"steps": steps, "batch": BATCH, "warmup": warmup, "repeats": repeats},
        reference="floor",
        tolerance=Tolerance(),
        cases=cases,
        focus="tdhook_rl",
    )
