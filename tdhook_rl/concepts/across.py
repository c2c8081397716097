"""Concepts across layers and training: a probe for every concept at every layer of every
checkpoint, beside the random-network control (McGrath et al. 2022, "Acquisition of chess
knowledge in AlphaZero": *what* is encoded, *where* in the network and *when* in training).

:func:`probe_across` records the sites of each checkpoint on the same states
(:class:`~tdhook_rl.Recorded`), fits :func:`~tdhook_rl.probes.fit_probes` on held-out
episodes for each concept, and does the same on a randomly re-initialized copy of the network
(:func:`~tdhook_rl.probes.randomized_copy`): the control tells what a layer encodes just by
being a function of the input. The result is a tidy :class:`ConceptTable`, one row per
``(concept, site, step)``; :func:`~tdhook_rl.concepts.across_plots.plot_concepts_across`
draws it as layer x training-step maps.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from tdhook_rl.latent.probes import fit_probes, randomized_copy, text_table
from tdhook_rl.latent.recorded import Recorded
from tdhook_rl.latent.splits import episode_ids

__all__ = ["ConceptTable", "checkpoint_modules", "probe_across", "probe_recorded"]

Kind = Literal["ridge", "logistic"]
_TRAJ = ("collector", "traj_ids")


@dataclass
class ConceptTable:
    """Held-out probe scores, one row per ``(concept, site, step)``.

    Attributes:
        rows: dicts with ``concept``, ``site``, ``step``, ``kind``, ``metric`` (``"r2"`` for
            ridge, ``"balanced_accuracy"`` for logistic probes), ``score``, ``control`` (the
            same probe on the random network; ``None`` without control), ``selectivity``
            (``score - control``), ``n_train``, ``n_test`` and ``note`` (why a score is
            missing: a constant concept, too few samples of a class).
    """

    rows: list[dict[str, Any]]

    @property
    def concepts(self) -> list[str]:
        return list(dict.fromkeys(r["concept"] for r in self.rows))

    @property
    def sites(self) -> list[str]:
        return list(dict.fromkeys(r["site"] for r in self.rows))

    @property
    def steps(self) -> list[Any]:
        return list(dict.fromkeys(r["step"] for r in self.rows))

    def grid(self, concept: str, value: str = "score") -> torch.Tensor:
        """``[sites, steps]`` of ``value`` (``"score"``, ``"control"``, ``"selectivity"``)
        for one concept, NaN where missing.

        Examples:
            >>> t = ConceptTable([{"concept": "c", "site": "a", "step": 0, "score": 0.5}])
            >>> t.grid("c").tolist()
            [[0.5]]
        """
        if concept not in self.concepts:
            raise KeyError(f"no concept {concept!r} in the table; concepts: {self.concepts}")
        sites, steps = self.sites, self.steps
        out = torch.full((len(sites), len(steps)), math.nan, dtype=torch.float64)
        for r in self.rows:
            if r["concept"] == concept and r.get(value) is not None:
                out[sites.index(r["site"]), steps.index(r["step"])] = float(r[value])
        return out

    def to_json(self, path: str | Path) -> None:
        """Writes the rows as a JSON list (``null`` where a score is missing)."""
        Path(path).write_text(json.dumps(self.rows, indent=2, default=str) + "\n")

    def __str__(self) -> str:
        cols = ["concept", "site", "step", "metric", "score", "control", "selectivity", "note"]
        return text_table(self.rows, cols)


def checkpoint_modules(
    network: nn.Module, state_dicts: Mapping[Any, Mapping[str, Any] | str | Path]
) -> dict[Any, nn.Module]:
    """Copies of ``network`` with each checkpoint's weights, ``{step: module}`` in eval mode.

    Args:
        network: the architecture (its own weights are not used).
        state_dicts: ``{step: state_dict}`` or ``{step: path}`` of a ``torch.save`` file holding
            a state dict or ``{"state_dict": ...}`` (the shipped agents' format).

    Raises:
        ValueError: a checkpoint that does not match the network, naming the step.

    Examples:
        >>> net = torch.nn.Linear(2, 1)
        >>> mods = checkpoint_modules(net, {0: net.state_dict()})
        >>> list(mods), mods[0] is net
        ([0], False)
    """
    out = {}
    for step, state in state_dicts.items():
        if isinstance(state, str | Path):
            state = torch.load(state, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        module = copy.deepcopy(network)
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError) as err:
            first = str(err).strip().splitlines()
            reason = " ".join(line.strip() for line in first[:3])
            raise ValueError(
                f"checkpoint {step!r} does not match the network ({type(network).__name__}): "
                f"{reason}; build the network with the checkpoint's config"
            ) from None
        out[step] = module.eval()
    return out


def _record(
    module: TensorDictModuleBase, data: TensorDictBase, sites: Mapping[str, Any], chunk: int
) -> TensorDict:
    """``{site: [N, D]}`` of ``module`` on the flat states ``data`` (``[N]``), in chunks."""
    recorded = Recorded(module, dict(sites), out_key="_concepts")
    parts = []
    keys = list(dict.fromkeys(module.in_keys))
    with torch.no_grad():
        for i in range(0, data.shape[0], chunk):
            out = recorded(data[i : i + chunk].select(*keys, strict=False).clone())
            parts.append(
                TensorDict(
                    {s: out["_concepts", s].flatten(1) for s in sites}, batch_size=out.batch_size
                )
            )
    return torch.cat(parts)


def _kind(name: str, value: torch.Tensor, kinds: Mapping[str, Kind]) -> Kind:
    if name in kinds:
        if kinds[name] not in ("ridge", "logistic"):
            raise ValueError(f"kinds[{name!r}] must be 'ridge' or 'logistic'")
        return kinds[name]
    return "logistic" if value.dtype == torch.bool else "ridge"


def _problem(value: torch.Tensor, kind: Kind, min_per_class: int) -> str | None:
    """Why a concept cannot be scored on these samples, or ``None``."""
    if value.numel() == 0:
        return "no valid samples"
    if bool((value == value.flatten()[0]).all()):
        return f"constant on the data (always {value.flatten()[0].item()}): no score"
    if kind == "logistic":
        counts = torch.bincount(value.long())
        counts = counts[counts > 0]
        if int(counts.min()) < min_per_class:
            return (
                f"too few samples per class (smallest class: {int(counts.min())} < "
                f"{min_per_class}): no score; use more states"
            )
    return None


def probe_across(
    checkpoints: Mapping[Any, TensorDictModuleBase],
    data: TensorDictBase,
    sites: Mapping[str, Any],
    concepts: Mapping[str, torch.Tensor],
    *,
    control: Literal["random"] | TensorDictModuleBase | None = "random",
    seed: int = 0,
    chunk_size: int = 4096,
    **options: Any,
) -> ConceptTable:
    """Probes every concept at every site of every checkpoint, with the random control.

    Args:
        checkpoints: ``{training step: network}`` in training order (see
            :func:`checkpoint_modules`); each is called on ``data``.
        data: the states, ``[*batch]`` with the entries the networks read and the episode
            structure (``("next", "done")`` along time, or ``("collector", "traj_ids")``):
            probes are scored on held-out episodes.
        sites: ``{name: site}`` as :class:`~tdhook_rl.Recorded` takes them (module paths).
        concepts: ``{name: [*batch] tensor}`` (e.g. from :mod:`tdhook_rl.concepts.labels`);
            NaN marks steps where a concept is unknown (a censored future label): they are
            left out of that concept's probes.
        control: ``"random"`` (a :func:`~tdhook_rl.probes.randomized_copy` of the last
            checkpoint, seeded by ``seed``), a network to use as the control, or ``None``.
        seed: seeds the split and the random network.
        chunk_size: states per forward pass.
        **options: those of :func:`probe_recorded` (``kinds``, ``held_out``,
            ``min_per_class``, ``max_features``, ``probe_options``).

    Returns:
        A :class:`ConceptTable`.

    Examples:
        >>> from tensordict.nn import TensorDictModule
        >>> net = TensorDictModule(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()),
        ...                        ["observation"], ["out"])
        >>> x = torch.randn(200, 4)
        >>> done = (torch.arange(200) % 20 == 19).unsqueeze(-1)
        >>> td = TensorDict({"observation": x, ("next", "done"): done}, [200])
        >>> table = probe_across({0: net}, td, {"h": "module.0"}, {"x0": x[:, 0]})
        >>> row = table.rows[0]
        >>> row["concept"], row["site"], row["metric"], row["score"] > 0.9
        ('x0', 'h', 'r2', True)
    """
    if not isinstance(checkpoints, Mapping) or not checkpoints:
        raise ValueError("checkpoints must be a non-empty mapping {training step: network}")
    if not isinstance(sites, Mapping) or not sites:
        raise ValueError("sites must be a non-empty mapping {name: module path}")
    _check_concepts(concepts, data)
    states = data.reshape(-1)

    def record(module: TensorDictModuleBase) -> dict[str, torch.Tensor]:
        acts = _record(module, states, sites, chunk_size)
        return {s: acts[s].reshape(*data.shape, -1) for s in sites}

    acts = {step: record(m) for step, m in checkpoints.items()}
    ctrl = None
    if control is not None:
        last = list(checkpoints.values())[-1]
        ctrl = record(randomized_copy(last, seed) if isinstance(control, str) else control)
    return probe_recorded(acts, data, concepts, control=ctrl, seed=seed, **options)


def _check_concepts(concepts: Mapping[str, torch.Tensor], data: TensorDictBase) -> None:
    if not isinstance(concepts, Mapping) or not concepts:
        raise ValueError("concepts must be a non-empty mapping {name: [*batch] tensor}")
    for name, value in concepts.items():
        if not isinstance(value, torch.Tensor) or value.shape[: data.batch_dims] != data.shape:
            raise ValueError(
                f"concept {name!r} must be a tensor shaped like the data's batch "
                f"{tuple(data.shape)}, got {getattr(value, 'shape', type(value).__name__)}"
            )


def probe_recorded(
    activations: Mapping[Any, Mapping[str, torch.Tensor]],
    data: TensorDictBase,
    concepts: Mapping[str, torch.Tensor],
    *,
    control: Mapping[str, torch.Tensor] | None = None,
    kinds: Mapping[str, Kind] | None = None,
    held_out: float = 0.25,
    seed: int = 0,
    min_per_class: int = 5,
    max_features: int | None = None,
    probe_options: Mapping[Kind, Mapping[str, Any]] | None = None,
) -> ConceptTable:
    """:func:`probe_across` on activations already recorded.

    Args:
        activations: ``{step: {site: [*batch, *units]}}`` on the states of ``data``.
        data: the states' episode structure (``("next", "done")`` or collector ids).
        concepts: see :func:`probe_across`.
        control: ``{site: [*batch, *units]}`` of the random network, or ``None``.
        kinds: ``{name: "ridge" | "logistic"}``; by default bool concepts are classified
            (balanced accuracy) and the others regressed (R^2).
        held_out: fraction of episodes held out.
        seed: seeds the split.
        min_per_class: a classified concept needs this many samples of each class.
        max_features: a site with more units is probed on its first ``max_features``
            principal components (over all states of that network, labels unseen): a cheaper
            probe of a wide layer (a 48 x 8 x 8 conv map), applied to the control alike.
        probe_options: ``{"ridge": {...}, "logistic": {...}}`` probe keyword arguments.

    Examples:
        >>> x = torch.randn(100, 3)
        >>> td = TensorDict({("next", "done"): (torch.arange(100) % 10 == 9)[:, None]}, [100])
        >>> t = probe_recorded({0: {"h": x}}, td, {"c": x[:, 1] > 0}, control={"h": -x})
        >>> t.rows[0]["metric"], t.rows[0]["score"] > 0.9, t.rows[0]["selectivity"] < 0.1
        ('balanced_accuracy', True, True)
    """
    if not isinstance(activations, Mapping) or not activations:
        raise ValueError("activations must be a non-empty mapping {step: {site: tensor}}")
    _check_concepts(concepts, data)
    if max_features is not None and (not isinstance(max_features, int) or max_features < 1):
        raise ValueError(f"max_features must be an int >= 1 or None, got {max_features!r}")
    kinds = dict(kinds or {})
    unknown = set(kinds) - set(concepts)
    if unknown:
        raise KeyError(f"kinds names concepts that are not given: {sorted(unknown)}")
    options = {k: dict(v) for k, v in (probe_options or {}).items()}
    flat = TensorDict({_TRAJ: episode_ids(data).reshape(-1)}, batch_size=[data.numel()])
    values = {name: value.reshape(data.numel()) for name, value in concepts.items()}
    args = (flat, values, kinds, held_out, seed, min_per_class, options)
    controls = None
    if control is not None:
        controls = _scores(_flatten(control, data, max_features), *args)
    rows = []
    for step, acts in activations.items():
        scores = _scores(_flatten(acts, data, max_features), *args)
        for (concept, site), s in scores.items():
            ctrl = None if controls is None else controls[concept, site]["score"]
            score = s["score"]
            sel = None if score is None or ctrl is None else score - ctrl
            rows.append(
                {
                    "concept": concept,
                    "site": site,
                    "step": step,
                    **s,
                    "control": ctrl,
                    "selectivity": sel,
                }
            )
    order = {c: i for i, c in enumerate(concepts)}
    rows.sort(key=lambda r: order[r["concept"]])
    return ConceptTable(rows)


def _flatten(
    acts: Mapping[str, torch.Tensor], data: TensorDictBase, max_features: int | None
) -> TensorDict:
    """``{site: [N, D]}`` (principal components when ``D > max_features``)."""
    n = data.numel()
    out = {}
    for site, value in acts.items():
        if not isinstance(value, torch.Tensor) or value.shape[: data.batch_dims] != data.shape:
            raise ValueError(
                f"the activations of site {site!r} must lead with the data's batch "
                f"{tuple(data.shape)}, got {getattr(value, 'shape', type(value).__name__)}"
            )
        x = value.reshape(n, -1)
        out[site] = (
            x if max_features is None or x.shape[1] <= max_features else _pca(x, max_features)
        )
    return TensorDict(out, batch_size=[n])


def _pca(x: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` principal-component scores of ``x [N, D]``, from the ``N x N`` Gram
    (cheap when ``N`` is not much larger than ``D``) or the ``D x D`` covariance."""
    xc = (x - x.mean(0)).double()
    if xc.shape[0] <= xc.shape[1]:
        vals, vecs = torch.linalg.eigh(xc @ xc.T)  # ascending
        top = vals.flip(0)[:k].clamp(min=0).sqrt()
        return (vecs.flip(1)[:, :k] * top).to(x.dtype)  # U S
    _, vecs = torch.linalg.eigh(xc.T @ xc)
    return (xc @ vecs.flip(1)[:, :k]).to(x.dtype)


def _scores(acts, flat, values, kinds, held_out, seed, min_per_class, options):
    """``{(concept, site): {"kind", "metric", "score", "n_train", "n_test", "note"}}``."""
    td = flat.clone()
    td["activations"] = acts
    out: dict[tuple[str, str], dict[str, Any]] = {}
    groups: dict[tuple[Kind, bool], list[str]] = {}
    for name, value in values.items():
        kind = _kind(name, value, kinds)
        known = value == value  # NaN: unknown
        problem = _problem(value[known], kind, min_per_class)
        if problem is not None:
            for site in acts.keys():
                out[name, site] = _row(kind, None, 0, 0, problem)
            continue
        groups.setdefault((kind, bool(known.all())), []).append(name)
    jobs = []
    for (kind, full), names in groups.items():
        if full:
            jobs.append((kind, names, None))
        else:  # a concept with unknown steps is probed on its own known steps
            jobs += [(kind, [n], ~values[n].isnan()) for n in names]
    for kind, names, mask in jobs:
        part = td if mask is None else td[mask]
        labels = {n: (values[n] if mask is None else values[n][mask]) for n in names}
        if kind == "logistic":
            labels = {n: v.long() for n, v in labels.items()}
        try:
            res = fit_probes(
                part,
                list(acts.keys()),
                labels,
                kind=kind,
                held_out=held_out,
                seed=seed,
                probe_options=options.get(kind),
            )
        except ValueError as err:
            for n in names:
                for site in acts.keys():
                    out[n, site] = _row(kind, None, 0, 0, str(err).split(";")[0])
            continue
        metric = "r2" if kind == "ridge" else "balanced_accuracy"
        for r in res.rows:
            out[r["label"], r["site"]] = _row(kind, r[metric], r["n_train"], r["n_test"], None)
            if kind == "logistic":
                out[r["label"], r["site"]]["accuracy"] = r["accuracy"]
    return out


def _row(kind: Kind, score: float | None, n_train: int, n_test: int, note: str | None):
    metric = "r2" if kind == "ridge" else "balanced_accuracy"
    return {
        "kind": kind,
        "metric": metric,
        "score": score,
        "n_train": n_train,
        "n_test": n_test,
        "note": note,
    }
