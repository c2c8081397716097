"""Linear probes: what do an agent's hidden layers encode (pole angles, velocities, ...)?

:class:`RidgeProbe` (regression, R^2) and :class:`LogisticProbe` (classification, accuracy)
fit on standardized activations with torch, on the data's device, in memory or streamed from
batches. :func:`fit_probes` probes every recorded site for every label on held-out episodes
of a rollout or a replay buffer, next to the usual baseline: the same probe on activations of
a randomly initialized network (:func:`randomized_copy`).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdhook_rl.core.keys import as_key, key_tuple
from tdhook_rl.latent._statistics import _ClassCounts, _ClassScore, _Moments, _Scaler, _standardize
from tdhook_rl.latent.linear_probes import LogisticProbe, RidgeProbe
from tdhook_rl.latent.recorded import valid_key
from tdhook_rl.latent.splits import LabelSpec, split_batches

# defined here; the public home of every probe name is tdhook_rl.probes
__all__ = ["ProbeResults", "fit_probes", "randomized_copy"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ProbeResults:
    """Held-out scores of probes, one row per ``(site, label)``.

    Attributes:
        rows: dicts with ``site``, ``label``, ``kind``, the held-out score(s) (``r2``, or
            ``accuracy`` and ``balanced_accuracy``), the same for the control (prefixed
            ``control_``; ``None`` without control), ``n_train`` and ``n_test`` (steps),
            ``units`` (the site's features) and ``near_constant_units`` (how many of them
            vary less than the probe's ``min_std`` on the training steps: dead or saturated
            units, which the probe's standardization floors instead of blowing up).
        probes: the fitted probes by ``(site, label)``; ``control_probes`` likewise.
    """

    rows: list[dict[str, Any]]
    probes: dict[tuple[str, str], RidgeProbe | LogisticProbe] = field(default_factory=dict)
    control_probes: dict[tuple[str, str], RidgeProbe | LogisticProbe] = field(default_factory=dict)

    def to_tensordict(self) -> TensorDict:
        """Returns the numbers as ``td[site, label, metric]`` (NaN where there is no control)."""
        out = TensorDict()
        for row in self.rows:
            for metric, value in row.items():
                if metric not in ("site", "label", "kind"):
                    value = math.nan if value is None else value
                    out.set((row["site"], row["label"], metric), torch.tensor(value))
        return out

    def to_json(self, path: str | Path) -> None:
        """Writes the rows as a JSON list (``null`` where there is no control)."""
        Path(path).write_text(json.dumps(self.rows, indent=2) + "\n")

    def __str__(self) -> str:
        if not self.rows:
            return "ProbeResults(no rows)"
        return text_table(self.rows, list(self.rows[0]))


def text_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    """``rows`` as aligned text columns ``cols`` (floats to 3 decimals, ``None`` as ``-``).

    Examples:
        >>> rows = [{"site": "h1", "r2": 0.5}, {"site": "h2", "r2": None}]
        >>> print(text_table(rows, ["site", "r2"]))
        site  r2
        h1    0.500
        h2    -
    """
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def fit_probes(
    data: TensorDictBase | Any,
    sites: Sequence[str] | None,
    labels: Mapping[str, LabelSpec],
    *,
    kind: Literal["ridge", "logistic"] = "ridge",
    held_out: float = 0.2,
    seed: int = 0,
    batch_size: int | None = None,
    control: TensorDictBase | Any | None = None,
    activation_key: str | tuple[str, ...] = "activations",
    probe_options: Mapping[str, Any] | None = None,
) -> ProbeResults:
    """Fits one probe per ``(site, label)`` and scores it on held-out episodes.

    Args:
        data: a rollout or collector batch with ``(activation_key, site)`` entries (see
            :class:`~tdhook_rl.Recorded`), or a TorchRL ``ReplayBuffer`` of them, read in
            slices of ``batch_size`` (never materialized whole).
        sites: the recorded sites to probe; ``None`` for all of them.
        labels: ``{name: column}``, see :func:`labels_from`.
        kind: ``"ridge"`` (:class:`RidgeProbe`, R^2 per label) or ``"logistic"``
            (:class:`LogisticProbe`, accuracy and balanced accuracy).
        held_out: the fraction of episodes held out. A TensorDict is split exactly
            (:func:`episode_split`); a buffer holds out each episode whose seeded hash of its
            id is below ``held_out``, consistently across slices. Without collector
            ``traj_ids``, a buffer's episodes are counted from done flags in storage order (a
            buffer that wrapped around may cut one episode in two).
        seed: seeds the split.
        batch_size: steps per batch. ``None``: a TensorDict is fitted in memory (ridge in
            closed form, logistic with L-BFGS), a buffer is read 4096 items at a time. Streamed
            data is fitted in one pass (ridge) or with ``LogisticProbe.fit_batches``' epochs.
        control: the same data recorded from a randomly initialized copy of the network
            (``Recorded(randomized_copy(agent), sites)``), probed the same way.
        activation_key: the root key of the activations.
        probe_options: keyword arguments of the probe, e.g. ``{"alpha": 10.0}``.

    Returns:
        A :class:`ProbeResults`.

    Examples:
        >>> h = torch.randn(2, 50, 4)  # 2 environment copies, 50 steps, 4 units
        >>> done = torch.rand(2, 50, 1) < 0.1
        >>> td = TensorDict({("activations", "trunk"): h, ("next", "done"): done}, [2, 50])
        >>> res = fit_probes(td, ["trunk"], {"unit0": lambda t: t["activations", "trunk"][..., 0]})
        >>> res.rows[0]["r2"] > 0.99
        True
    """
    if kind not in ("ridge", "logistic"):
        raise ValueError(f"kind must be 'ridge' or 'logistic', got {kind!r}")
    make = RidgeProbe if kind == "ridge" else LogisticProbe
    options = dict(probe_options or {})
    make(**options)  # unknown or bad options fail here, before any pass over the data
    root = key_tuple(as_key(activation_key, "activation_key"))
    names = _site_names(data, sites, root, "data")
    args = (names, labels, kind, make, options, root, held_out, seed, batch_size)
    scores, probes = _probe(data, *args)
    rows = []
    if control is not None:
        _site_names(control, names, root, "control")
        control_scores, control_probes = _probe(control, *args)
    for key, score in scores.items():
        sizes = {k: score.pop(k) for k in _SIZES}
        ctrl = control_scores[key] if control is not None else dict.fromkeys(score)
        row = {"site": key[0], "label": key[1], "kind": kind, **score}
        row |= {f"control_{m}": ctrl[m] for m in score}
        rows.append(row | sizes)
    return ProbeResults(rows, probes, control_probes if control is not None else {})


# per-row counts that are not scores (kept out of the control_ columns)
_SIZES = ("n_train", "n_test", "units", "near_constant_units")


def _site_names(data: Any, sites: Sequence[str] | None, root: tuple[str, ...], what: str):
    if isinstance(data, TensorDictBase):
        peek = data
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        if len(data) == 0:
            raise ValueError(f"the {what} replay buffer is empty")
        peek = data[0:1]
    else:
        raise TypeError(
            f"{what} must be a TensorDict or a torchrl ReplayBuffer, got {type(data).__name__}"
        )
    acts = peek.get(root, None)
    if isinstance(acts, torch.Tensor):
        raise TypeError(
            f"the activations under {root!r} in the {what} are packed into one tensor "
            "(Recorded(..., packed=True)): split them per site with recorded.unpack(data) first"
        )
    if not isinstance(acts, TensorDictBase):
        raise KeyError(
            f"the {what} has no activations under {root!r}: record them with "
            f"tdhook_rl.Recorded(module, sites), or pass activation_key="
        )
    recorded = sorted(acts.keys())
    if sites is None:
        return recorded
    if isinstance(sites, str):
        sites = [sites]
    for site in sites:
        if site not in recorded:
            raise KeyError(
                f"site {site!r} is not recorded under {root!r} in the {what}; recorded sites: "
                f"{recorded}. Record it with Recorded(module, {{{site!r}: <module path>}})."
            )
    return list(sites)


def _probe(data, sites, labels, kind, make, options, root, held_out, seed, batch_size):
    keys = [(*root, s) for s in sites]
    flag = valid_key(root if len(root) > 1 else root[0])  # steps Recorded did not measure
    start = split_batches(data, labels, keys, held_out, seed, batch_size, valid=flag)
    names = list(labels)

    def batches() -> Iterator[tuple[TensorDictBase, torch.Tensor, torch.Tensor]]:
        for x, y, test in start():
            for name in names:
                _check_label(name, y[name], kind)
            yield x, y, test

    if kind == "ridge":
        return _ridge(batches, sites, names, make, options, root)
    if isinstance(data, TensorDictBase) and batch_size is None:
        return _logistic_in_memory(next(batches()), sites, names, make, options, root)
    return _logistic_streamed(batches, sites, names, make, options, root)


def _features(x: TensorDictBase, root: tuple[str, ...], site: str) -> torch.Tensor:
    return x.get((*root, site)).reshape(x.shape[0], -1)  # (n, *f) -> (n, D)


def _ridge(batches, sites, names, make, options, root):
    train = {s: _Moments() for s in sites}
    test = {s: _Moments() for s in sites}
    for x, y, is_test in batches():
        y = torch.stack([y[n].double() for n in names], -1)  # (n, L)
        for s in sites:
            f = _features(x, root, s)
            train[s].update(f[~is_test], y[~is_test])
            test[s].update(f[is_test], y[is_test])
    scores, probes = {}, {}
    for s in sites:
        _check_sizes(train[s].n, test[s].n)
        probe = make(**options)._solve(train[s])
        r2 = probe._r2(test[s], names).tolist()
        sizes = {"n_train": train[s].n, "n_test": test[s].n} | _units(probe)
        for j, name in enumerate(names):
            probes[s, name] = _column(probe, j)
            scores[s, name] = {"r2": r2[j], **sizes}
    return scores, probes


def _units(probe: RidgeProbe | LogisticProbe) -> dict[str, int]:
    return {"units": len(probe.feature_mean), "near_constant_units": probe.near_constant}


def _column(probe: RidgeProbe, j: int) -> RidgeProbe:
    one = copy.copy(probe)
    weight = probe._fitted()
    one.weight, one.bias, one._vector = weight[:, j : j + 1], probe.bias[j : j + 1], True
    return one


def _logistic_in_memory(batch, sites, names, make, options, root):
    x, y, is_test = batch
    scores, probes = {}, {}
    _check_sizes(int((~is_test).sum()), int(is_test.sum()))
    for s in sites:
        f = _features(x, root, s)
        for name in names:
            _check_classes_vary(name, y[name][~is_test].unique().numel())
            probe = make(**options).fit(f[~is_test], y[name][~is_test])
            score = _floats(probe.score(f[is_test], y[name][is_test]))
            scores[s, name] = score | {
                "n_train": int((~is_test).sum()),
                "n_test": int(is_test.sum()),
                **_units(probe),
            }
            probes[s, name] = probe
    return scores, probes


def _logistic_streamed(batches, sites, names, make, options, root):
    """One pass for standardization and classes, ``epochs`` of Adam steps, one to score."""
    scalers = {s: _Scaler() for s in sites}
    counts = {name: _ClassCounts() for name in names}
    n_steps, n_test, dtype = 0, 0, torch.float32
    for x, y, is_test in batches():
        for s in sites:
            f = _features(x, root, s)
            scalers[s].update(f[~is_test])
        for name in names:
            counts[name].update(y[name][~is_test].long())
        n_steps, n_test, dtype = n_steps + 1, n_test + int(is_test.sum()), f.dtype
    n_train = scalers[sites[0]].n
    _check_sizes(n_train, n_test)
    probes: dict[tuple[str, str], LogisticProbe] = {}
    for s in sites:
        for name in names:
            _check_classes_vary(name, counts[name].n_present())
            probes[s, name] = probe = make(**options)
            probe._begin(scalers[s], counts[name], dtype, probe.epochs * n_steps)
    for _ in range(probe.epochs):
        for x, y, is_test in batches():
            for s in sites:
                first = probes[s, names[0]]  # the labels of a site share its standardization
                z = _standardize(_features(x, root, s)[~is_test], *first._standardization())
                for name in names:
                    probes[s, name]._step(z, y[name][~is_test].long())
    results = {key: _ClassScore() for key in probes}
    for probe in probes.values():
        probe._end()
    for x, y, is_test in batches():
        for s in sites:
            f = _features(x, root, s)[is_test]
            for name in names:
                results[s, name].update(probes[s, name].predict(f), y[name][is_test].long())
    sizes = {"n_train": n_train, "n_test": n_test}
    return {k: _floats(r.result()) | sizes | _units(probes[k]) for k, r in results.items()}, probes


def _floats(score: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in score.items()}


def _check_label(name: str, value: torch.Tensor, kind: str) -> None:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(
            f"label {name!r} has {int(value.isnan().sum())} NaN and {int(value.isinf().sum())} "
            f"inf values; drop those steps (e.g. data[~data[key].isnan()]) or fill them"
        )
    if kind == "logistic" and (value.is_floating_point() or value.is_complex()):
        raise TypeError(
            f"label {name!r} is {value.dtype}: logistic probes need integer class ids or bools; "
            f"use kind='ridge' for a real-valued label, or a callable that bins it"
        )
    if kind == "logistic" and value.numel() and int(value.min()) < 0:
        raise ValueError(f"label {name!r} has negative class ids; class ids start at 0")


def _check_classes_vary(name: str, n_present: int) -> None:
    if n_present < 2:
        raise ValueError(
            f"label {name!r} is constant (a single class) on the training episodes: there is "
            f"nothing to classify; probe a label that varies, or use more episodes"
        )


def _check_sizes(n_train: int, n_test: int) -> None:
    if n_train == 0 or n_test == 0:
        raise ValueError(
            f"the episode split left {n_train} training and {n_test} held-out steps; record "
            f"more episodes (at least 2) or change held_out / seed"
        )


def randomized_copy(module: nn.Module, seed: int = 0) -> nn.Module:
    """Returns a deep copy of ``module`` with every submodule re-initialized by its own
    ``reset_parameters``: the usual control for probes, ``Recorded(randomized_copy(agent),
    sites)``. The draw is seeded with its own stream (``seed=0`` does not replay the
    initialization ``torch.manual_seed(0)`` gave the agent) and the global RNG is restored.

    Parameters owned by a submodule without ``reset_parameters`` keep their values, with a
    warning naming them.

    Args:
        module: the trained network (any ``nn.Module``, e.g. a TensorDict policy).
        seed: seeds the new initialization.

    Returns:
        The re-initialized copy; ``module`` is unchanged.

    Examples:
        >>> net = torch.nn.Linear(3, 2)
        >>> bool((randomized_copy(net).weight != net.weight).all())
        True
    """
    clone = copy.deepcopy(module)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    reset: set[int] = set()
    with torch.random.fork_rng(devices=cuda):
        stream = (seed * 0x9E3779B97F4A7C15 + 0x7D0E5EED) % 2**63
        torch.default_generator.manual_seed(stream)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(stream)
        for sub in clone.modules():
            reset_parameters = getattr(sub, "reset_parameters", None)
            if callable(reset_parameters):
                reset_parameters()
                reset.update(id(p) for p in sub.parameters(recurse=False))
    if not reset:
        raise ValueError(
            f"{type(module).__name__} has no submodule with parameters and reset_parameters(); "
            f"there is nothing to randomize"
        )
    kept = [name for name, p in clone.named_parameters() if id(p) not in reset]
    if kept:
        warnings.warn(
            f"randomized_copy: no reset_parameters() covers {kept}; they keep their values",
            stacklevel=2,
        )
    return clone
