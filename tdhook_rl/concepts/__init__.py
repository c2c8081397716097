"""Representations of an agent: sparse autoencoders, representation geometry, concept vectors.

* :mod:`~tdhook_rl.concepts.sae`, :mod:`~tdhook_rl.concepts.sae_training`,
  :mod:`~tdhook_rl.concepts.dashboard`: sparse autoencoders on recorded activations, their
  training (streamed from tensors, rollouts or replay buffers), feature dashboards, and
  steering through a feature (:class:`SAEFeature`).
* :mod:`~tdhook_rl.concepts.geometry`: intrinsic dimension (TwoNN) and CKA.
"""

from tdhook_rl.concepts.dashboard import FeatureDashboard, feature_dashboard
from tdhook_rl.concepts.geometry import cka_matrix, linear_cka, twonn
from tdhook_rl.concepts.sae import SAEFeature, SparseAutoencoder
from tdhook_rl.concepts.sae_training import (
    Resampling,
    SAEHistory,
    SAETrainer,
    activation_batches,
    sae_metrics,
)

__all__ = [
    "FeatureDashboard",
    "Resampling",
    "SAEFeature",
    "SAEHistory",
    "SAETrainer",
    "SparseAutoencoder",
    "activation_batches",
    "cka_matrix",
    "feature_dashboard",
    "linear_cka",
    "sae_metrics",
    "twonn",
]
