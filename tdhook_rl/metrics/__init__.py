"""Which explanation to trust: faithfulness metrics and sanity checks, measured on an agent's
own decisions.

Every metric reads what an :class:`~tdhook_rl.Attributed` wrapper wrote into a TensorDict (a
rollout or a batch) and is batched over samples, targets and perturbations: one forward (or
one attribution pass) for all of them. Each result is a dataclass that states its seeded
perturbation model, with a random-attribution baseline beside the measured numbers.

* :func:`deletion_curve`, :func:`insertion_curve`: targets as the top-k features are removed
  (inserted), the areas under the curves, random orderings as chance;
* :func:`infidelity`, :func:`sensitivity_max`: captum's definitions;
* :func:`prediction_gap`: PGI / PGU;
* :func:`randomization_check`: Adebayo et al.'s cascading and independent layer randomization;
* :func:`closed_loop_deletion`: returns of whole episodes with the top-k features masked.

Examples:
    >>> import torch
    >>> from tensordict import TensorDict
    >>> from tensordict.nn import TensorDictModule
    >>> import tdhook_rl as thr
    >>> from tdhook_rl.metrics import deletion_curve
    >>> net = TensorDictModule(torch.nn.Linear(4, 1), ["observation"], ["state_value"])
    >>> explained = thr.Attributed(net, "ig", inputs=["observation"],
    ...                            targets={"value": "state_value"})
    >>> td = explained(TensorDict(observation=torch.randn(16, 4), batch_size=[16]))
    >>> curve = deletion_curve(explained, td)
    >>> curve.auc["value"].shape, curve.random_auc["value"].shape
    (torch.Size([16]), torch.Size([16]))
"""

from __future__ import annotations

from tdhook_rl.metrics.closed_loop import (
    ClosedLoopResult,
    MaskedInput,
    closed_loop_deletion,
    first_episode_returns,
    mean_abs_attribution,
)
from tdhook_rl.metrics.deletion import (
    CurveResult,
    GreedyAgreement,
    deletion_curve,
    insertion_curve,
)
from tdhook_rl.metrics.infidelity import (
    InfidelityResult,
    SensitivityResult,
    gaussian_perturbations,
    infidelity,
    sensitivity_max,
    uniform_perturbations,
)
from tdhook_rl.metrics.prediction_gap import PredictionGapResult, prediction_gap
from tdhook_rl.metrics.sanity import (
    RandomizationResult,
    average_ranks,
    randomizable_layers,
    randomization_check,
    spearman,
)

__all__ = [
    "ClosedLoopResult",
    "CurveResult",
    "GreedyAgreement",
    "InfidelityResult",
    "MaskedInput",
    "PredictionGapResult",
    "RandomizationResult",
    "SensitivityResult",
    "average_ranks",
    "closed_loop_deletion",
    "deletion_curve",
    "first_episode_returns",
    "gaussian_perturbations",
    "infidelity",
    "insertion_curve",
    "mean_abs_attribution",
    "prediction_gap",
    "randomizable_layers",
    "randomization_check",
    "sensitivity_max",
    "spearman",
    "uniform_perturbations",
]
