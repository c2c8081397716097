"""Sparse autoencoders: recovery of planted features, determinism, resampling, data sources,
checkpoints, metrics against slow formulas, and the errors for bad input."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer

from tdhook_rl.concepts import (
    Resampling,
    SAETrainer,
    SparseAutoencoder,
    activation_batches,
    sae_metrics,
)

D_IN, PLANTED, N = 16, 24, 6000


def planted(seed: int = 0, n: int = N):
    """Sparse non-negative codes (8% active, values in [0.5, 1.5]) times a random unit
    dictionary, plus noise of std 0.01."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(D_IN, PLANTED, generator=g)
    dictionary /= dictionary.norm(dim=0)
    active = torch.rand(n, PLANTED, generator=g) < 0.08
    codes = active * (0.5 + torch.rand(n, PLANTED, generator=g))
    return codes @ dictionary.T + 0.01 * torch.randn(n, D_IN, generator=g), dictionary


def recovered(sae: SparseAutoencoder, dictionary: torch.Tensor) -> torch.Tensor:
    """Each planted direction's best cosine similarity with a decoder column."""
    return (dictionary.T @ sae.decoder.detach()).max(1).values


def train(x, kind: str, seed: int = 0, steps: int = 800, **kw) -> SparseAutoencoder:
    extra = {"l1": 0.05} if kind == "relu" else {"k": 3}
    sae = SparseAutoencoder(D_IN, 48, kind=kind, seed=seed, **extra)
    rs = Resampling(dead_after=100, check_every=100)
    SAETrainer(sae, lr=1e-2, resampling=rs, seed=seed, progress=False).fit(
        x, batch_size=256, steps=steps, **kw
    )
    return sae


@pytest.mark.parametrize("kind", ["relu", "topk"])
def test_recovers_planted_features(kind):
    x, dictionary = planted()
    sae = train(x, kind)
    cos = recovered(sae, dictionary)
    assert (cos > 0.9).float().mean() >= 0.9, cos
    metrics = sae_metrics(sae, x)
    assert metrics["fve"] > 0.8 and metrics["l0"] < 8, metrics
    if kind == "topk":
        assert metrics["l0"] <= 3
    assert sae.decoder.norm(dim=0).allclose(torch.ones(48), atol=1e-5)


def test_training_is_deterministic_for_a_seed():
    x, _ = planted(n=2000)
    a, b = train(x, "topk", steps=100), train(x, "topk", steps=100)
    c = train(x, "topk", seed=1, steps=100)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    assert not torch.equal(a.decoder, c.decoder)


def test_resampling_revives_dead_features():
    x, _ = planted(n=3000)

    def dead_after_training(resampling):
        sae = SparseAutoencoder(D_IN, 48, kind="relu", l1=0.05, seed=0)
        with torch.no_grad():
            sae.b_enc[:24] = -100.0  # half of the features can never fire
        trainer = SAETrainer(sae, lr=1e-2, resampling=resampling, progress=False)
        history = trainer.fit(x, batch_size=256, steps=300)
        return sae_metrics(sae, x)["dead_fraction"], history

    without, _ = dead_after_training(None)
    with_resampling, history = dead_after_training(Resampling(dead_after=50, check_every=50))
    assert without >= 0.5
    assert with_resampling < 0.25 and history.resampled and history.resampled[0] >= 24


def test_metrics_match_a_slow_computation():
    x, _ = planted(n=500)
    sae = train(x, "relu", steps=50)
    metrics = sae_metrics(sae, x, batch_size=64)  # streamed in 8 batches
    with torch.no_grad():
        f = sae.encode(x)
        x_hat = sae.decode(f)
    sse = ((x - x_hat) ** 2).sum()
    sst = ((x - x.mean(0)) ** 2).sum()
    assert metrics["mse"] == pytest.approx(float(sse / x.numel()), rel=1e-5)
    assert metrics["fve"] == pytest.approx(float(1 - sse / sst), rel=1e-5)
    assert metrics["l0"] == pytest.approx(float((f > 0).sum(1).float().mean()), rel=1e-6)
    assert metrics["dead_fraction"] == pytest.approx(float((f.amax(0) <= 0).float().mean()))


def test_normalization_is_set_from_the_data():
    x, _ = planted(n=1000)
    x = 5.0 * x + 3.0
    sae = SparseAutoencoder(D_IN, 32, kind="topk", k=2)
    SAETrainer(sae, lr=1e-9, progress=False).fit(x, steps=1)  # nearly no update
    assert sae.b_dec.detach().allclose(x.mean(0), atol=1e-3)
    rms = ((x - x.mean(0)) ** 2).mean().sqrt()
    assert float(sae.input_scale) == pytest.approx(float(rms), rel=1e-4)


def _rollout_like(x: torch.Tensor) -> TensorDict:
    return TensorDict({("activations", "h"): x.reshape(10, -1, D_IN)}, batch_size=[10, 200])


@pytest.mark.parametrize("source", ["tensor", "rollout", "buffer-iterated", "memmap-sampled"])
def test_every_data_source_trains(source, tmp_path):
    x, dictionary = planted(n=2000)
    key, shuffle = ("activations", "h"), True
    if source == "tensor":
        data, key = x.reshape(10, 200, D_IN), None  # a time-major [T, B, d] tensor
    elif source == "rollout":
        data = _rollout_like(x)
    else:
        storage = (
            LazyTensorStorage(2000)
            if source == "buffer-iterated"
            else LazyMemmapStorage(2000, scratch_dir=tmp_path)
        )
        data = ReplayBuffer(storage=storage)
        data.extend(_rollout_like(x).reshape(-1))
        shuffle = source == "memmap-sampled"
    torch.manual_seed(0)  # the buffer's sampler draws from the global generator
    sae = SparseAutoencoder(D_IN, 48, kind="topk", k=3, seed=0)
    SAETrainer(sae, lr=1e-2, progress=False).fit(
        data, key, batch_size=200, steps=400, shuffle=shuffle
    )
    assert (recovered(sae, dictionary) > 0.9).float().mean() >= 0.75
    assert sae_metrics(sae, data, key)["n"] == 2000


def test_batches_of_a_buffer_in_order_are_its_slices():
    x = torch.randn(25, 3)
    rb = ReplayBuffer(storage=LazyTensorStorage(25))
    rb.extend(TensorDict(h=x, batch_size=[25]))
    got = list(activation_batches(rb, "h", 10, shuffle=False)())
    assert [b.shape[0] for b in got] == [10, 10, 5]
    assert torch.equal(torch.cat(got), x)


def test_checkpoints_round_trip(tmp_path):
    x, _ = planted(n=1000)
    sae = SparseAutoencoder(D_IN, 32, kind="topk", k=2, seed=3)
    path = tmp_path / "ckpt" / "sae.pt"
    SAETrainer(sae, progress=False).fit(x, steps=20, checkpoint=path, checkpoint_every=10)
    loaded = SparseAutoencoder.load(path)
    assert loaded.config() == sae.config()
    for name, value in sae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert torch.equal(loaded(x[:5]), sae(x[:5]))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a checkpoint written by SparseAutoencoder\.save"):
        SparseAutoencoder.load(tmp_path / "other.pt")


@pytest.mark.parametrize("shape", [(), (5,), (4, 3)], ids=str)
def test_encode_decode_keep_batch_shapes(shape):
    sae = SparseAutoencoder(6, 10, kind="topk", k=2)
    x = torch.randn(*shape, 6)
    assert sae.encode(x).shape == (*shape, 10)
    assert sae(x).shape == x.shape


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"1 <= k <= n_features=8"):
        SparseAutoencoder(4, 8, kind="topk", k=9)
    with pytest.raises(ValueError, match="a TopK SAE needs"):
        SparseAutoencoder(4, 8, kind="topk")
    with pytest.raises(ValueError, match="k is for kind='topk'"):
        SparseAutoencoder(4, 8, k=2)
    with pytest.raises(ValueError, match="n_features must be a positive int"):
        SparseAutoencoder(4, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        SparseAutoencoder(4, 8, kind="gated")
    sae = SparseAutoencoder(4, 8)
    with pytest.raises(ValueError, match="the activations are constant"):
        SAETrainer(sae, progress=False).fit(torch.ones(100, 4))
    with pytest.raises(ValueError, match="built for activations of width d_in=4"):
        sae.encode(torch.ones(3, 5))
    with pytest.raises(ValueError, match="needs the activations' key"):
        SAETrainer(sae, progress=False).fit(TensorDict(h=torch.randn(3, 4), batch_size=[3]))
    with pytest.raises(KeyError, match="the data has no entry"):
        SAETrainer(sae, progress=False).fit(TensorDict(h=torch.randn(3, 4), batch_size=[3]), "g")
    with pytest.raises(TypeError, match="data must be a tensor"):
        SAETrainer(sae, progress=False).fit([[1.0, 2.0]])
    with pytest.raises(ValueError, match="the replay buffer is empty"):
        SAETrainer(sae, progress=False).fit(ReplayBuffer(storage=LazyTensorStorage(4)), "h")


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    x, _ = planted(n=500)
    SAETrainer(SparseAutoencoder(D_IN, 32), progress=True).fit(x, steps=3)
    assert "SAE" in capsys.readouterr().err
    SAETrainer(SparseAutoencoder(D_IN, 32)).fit(x, steps=3)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


def test_training_inside_inference_mode():
    x, dictionary = planted(n=2000)
    sae = SparseAutoencoder(D_IN, 48, kind="topk", k=3)
    with torch.inference_mode():  # as in a collector's loop
        SAETrainer(sae, lr=1e-2, progress=False).fit(x.clone(), batch_size=256, steps=300)
    assert (recovered(sae, dictionary) > 0.9).float().mean() >= 0.75
