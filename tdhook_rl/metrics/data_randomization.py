"""Data randomization (Adebayo et al. 2018, "Sanity checks for saliency maps", section 4):
train one network on the real targets and one on the targets permuted across the inputs, and
compare a method's maps on the two. A faithful method's maps differ (low rank correlation):
the second network learned nothing about the inputs but memorized noise.

Retraining an agent is expensive, so the check *distils*: a fresh network regresses a
recorded teacher's outputs (a policy's action location, a critic's value) on recorded
states, which is cheap and gives a network that computes the teacher's function.

Examples:
    >>> import torch
    >>> from tdhook_rl.metrics.data_randomization import data_randomization_check
    >>> _ = torch.manual_seed(0)
    >>> states = torch.randn(256, 6)
    >>> targets = states @ torch.tensor([[3.0], [2.0], [1.0], [0.0], [0.0], [0.0]])
    >>> result = data_randomization_check(lambda: torch.nn.Linear(6, 1), states, targets,
    ...                                   "saliency", steps=300, lr=0.1)
    >>> result.fit["y0"] > 0.99, result.fit_permuted["y0"] < 0.5
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import AttributionMethod
from tdhook_rl.metrics._common import generator
from tdhook_rl.metrics.sanity import spearman
from tdhook_rl.targets import Index

__all__ = ["DataRandomizationResult", "compare_maps", "data_randomization_check", "distil"]


@dataclass
class DataRandomizationResult:
    """A method's maps on a network distilled from the real targets and on one distilled
    from permuted targets.

    Attributes:
        heads: the target columns' names.
        correlation: per head, Spearman's correlation per state between the two networks'
            ``|attribution|``, ``(N,)`` (low: the method sees what was learned).
        fit: per head, R^2 of the network trained on the real targets, on them.
        fit_permuted: per head, R^2 of the other network on the real (unpermuted) targets
            (near 0: it learned nothing about the inputs).
        trained: the network trained on the real targets.
        permuted: the network trained on the permuted targets.
        perturbation: the randomization model, in words, with its seed.
    """

    heads: list[str]
    correlation: dict[str, torch.Tensor]
    fit: dict[str, float]
    fit_permuted: dict[str, float]
    trained: nn.Module
    permuted: nn.Module
    perturbation: str

    def mean(self) -> dict[str, float]:
        """Per head, the correlation averaged over the states (NaN-aware)."""
        return {h: float(c.nanmean()) for h, c in self.correlation.items()}


def distil(
    make_student: Callable[[], nn.Module],
    states: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 1e-2,
    seed: int = 0,
) -> nn.Module:
    """A fresh ``make_student()`` (built under ``torch.manual_seed(seed)`` on a forked RNG,
    so every call starts from the same weights) fitted to ``targets`` ``(N, H)`` on
    ``states`` ``(N, F)`` by full-batch Adam on the mean squared error.

    Examples:
        >>> x = torch.randn(64, 3)
        >>> net = distil(lambda: torch.nn.Linear(3, 1), x, x[:, :1] * 2, steps=400, lr=0.05)
        >>> torch.allclose(net.weight, torch.tensor([[2.0, 0.0, 0.0]]), atol=1e-2)
        True
    """
    _check(states, targets, steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = make_student()
    student = student.to(states.device)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    x, y = states.detach(), targets.detach()
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = (student(x) - y).square().mean()
            loss.backward()
            optimizer.step()
    return student.eval()


def data_randomization_check(
    make_student: Callable[[], nn.Module],
    states: torch.Tensor,
    targets: torch.Tensor,
    method: AttributionMethod | str,
    *,
    heads: Sequence[str] | None = None,
    steps: int = 500,
    lr: float = 1e-2,
    seed: int = 0,
) -> DataRandomizationResult:
    """Distils ``targets`` into ``make_student()`` twice, on the real rows and on the rows
    permuted across states (one seeded permutation, the same for every column, from the
    same initial weights), and compares ``method``'s maps of each column on ``states``.

    Args:
        make_student: builds the fresh network, ``(N, F) -> (N, H)``.
        states: the recorded inputs ``(N, F)`` (e.g. standardized observations).
        targets: the teacher's outputs ``(N, H)`` (or ``(N,)``) on them.
        method: the attribution method (an instance or a name).
        heads: a name per column (default ``y0, y1, ...``).
        steps: Adam steps of each distillation.
        lr: Adam's learning rate.
        seed: seeds the students' initialization and the permutation.

    Returns:
        A :class:`DataRandomizationResult`.
    """
    if targets.ndim == 1:
        targets = targets[:, None]
    _check(states, targets, steps)
    names = [f"y{i}" for i in range(targets.shape[1])] if heads is None else list(heads)
    if len(names) != targets.shape[1]:
        raise ValueError(f"heads names {len(names)} columns, targets have {targets.shape[1]}")
    order = torch.randperm(states.shape[0], generator=generator(seed)).to(states.device)
    trained = distil(make_student, states, targets, steps=steps, lr=lr, seed=seed)
    permuted = distil(make_student, states, targets[order], steps=steps, lr=lr, seed=seed)
    correlation = compare_maps(trained, permuted, states, method, names)
    with torch.no_grad():
        fits = [_r2(student(states), targets) for student in (trained, permuted)]
    return DataRandomizationResult(
        heads=names,
        correlation=correlation,
        fit=dict(zip(names, fits[0], strict=True)),
        fit_permuted=dict(zip(names, fits[1], strict=True)),
        trained=trained,
        permuted=permuted,
        perturbation=(
            f"targets permuted across the {states.shape[0]} states (seed={seed}); both "
            f"students from the same initial weights, {steps} full-batch Adam steps, lr={lr}; "
            f"Spearman over {states.shape[1]} features per state"
        ),
    )


def compare_maps(
    trained: nn.Module,
    permuted: nn.Module,
    states: torch.Tensor,
    method: AttributionMethod | str,
    heads: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Spearman's correlation per state between ``method``'s ``|attribution|`` of each
    output column (``heads`` names them in order) of two networks ``(N, F) -> (N, H)``.

    Examples:
        >>> a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
        >>> compare_maps(a, a, torch.randn(4, 3), "saliency", ["y"])["y"]
        tensor([1., 1., 1., 1.])
    """
    maps = []
    for student in (trained, permuted):
        module = TensorDictModule(student, ["observation"], ["prediction"])
        explained = Attributed(
            module,
            method,
            inputs=["observation"],
            targets={h: Index("prediction", i) for i, h in enumerate(heads)},
        )
        td = explained(TensorDict(observation=states.detach(), batch_size=states.shape[:1]))
        maps.append({h: td["attribution", h, "observation"].detach() for h in heads})
    return {h: spearman(maps[0][h].abs(), maps[1][h].abs()) for h in heads}


def _r2(prediction: torch.Tensor, targets: torch.Tensor) -> list[float]:
    residual = (prediction - targets).square().sum(0)
    total = (targets - targets.mean(0)).square().sum(0)
    return (1 - residual / total.clamp_min(1e-30)).tolist()


def _check(states: torch.Tensor, targets: torch.Tensor, steps: int) -> None:
    if not isinstance(states, torch.Tensor) or states.ndim != 2:
        raise ValueError(f"states must be an (N, F) tensor, got {getattr(states, 'shape', states)}")
    if not isinstance(targets, torch.Tensor) or targets.ndim != 2:
        raise ValueError(
            f"targets must be (N, H) or (N,), got {getattr(targets, 'shape', targets)}"
        )
    if targets.shape[0] != states.shape[0]:
        raise ValueError(
            f"targets have {targets.shape[0]} rows but states have {states.shape[0]}: give one "
            "target row per recorded state"
        )
    if states.shape[0] < 2:
        raise ValueError("data randomization needs at least 2 states to permute")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
