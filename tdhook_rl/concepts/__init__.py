"""Representations of an agent: sparse autoencoders, representation geometry, concept vectors.

* :mod:`~tdhook_rl.concepts.sae`, :mod:`~tdhook_rl.concepts.sae_training`,
  :mod:`~tdhook_rl.concepts.dashboard`: sparse autoencoders (ReLU and TopK) on recorded
  activations, trained from tensors, rollouts or replay buffers, their metrics and feature
  dashboards, and steering through one feature in ``thr.Intervened`` (:class:`SAEFeature`).
* :mod:`~tdhook_rl.concepts.geometry`: intrinsic dimension (TwoNN) and linear CKA.
* :mod:`~tdhook_rl.concepts.tcav`: concept activation vectors, TCAV scores of every head and
  their t-test against random CAVs.
* :mod:`~tdhook_rl.concepts.plots`: figures (matplotlib is imported when one is drawn).

Examples:
    >>> from tdhook_rl.concepts import SparseAutoencoder, SAETrainer, twonn
    >>> SparseAutoencoder(8, 32, kind="topk", k=4).kind
    'topk'
"""

from tdhook_rl.concepts.dashboard import FeatureDashboard, feature_attributions, feature_dashboard
from tdhook_rl.concepts.geometry import cka_matrix, linear_cka, twonn
from tdhook_rl.concepts.sae import SAEFeature, SparseAutoencoder
from tdhook_rl.concepts.sae_training import (
    Resampling,
    SAEHistory,
    SAETrainer,
    activation_batches,
    sae_metrics,
)
from tdhook_rl.concepts.tcav import (
    CAV,
    TCAVResult,
    concept_activation_vector,
    directional_derivatives,
    tcav,
    tcav_scores,
)

__all__ = [
    "CAV",
    "FeatureDashboard",
    "Resampling",
    "SAEFeature",
    "SAEHistory",
    "SAETrainer",
    "SparseAutoencoder",
    "TCAVResult",
    "activation_batches",
    "cka_matrix",
    "concept_activation_vector",
    "directional_derivatives",
    "feature_attributions",
    "feature_dashboard",
    "linear_cka",
    "sae_metrics",
    "tcav",
    "tcav_scores",
    "twonn",
]
