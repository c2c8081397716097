"""Attribution methods. Each file holds one method; all share :mod:`.engine`.

Methods can be given to :class:`tdhook_rl.Attributed` as instances or by name:
``"saliency"``, ``"input_x_gradient"``, ``"integrated_gradients"`` (``"ig"``), ``"smoothgrad"``,
and the perturbation methods (no gradients) ``"feature_ablation"``, ``"exact_shapley"``,
``"shapley_value_sampling"``, ``"kernel_shap"``, ``"lime"``, ``"perturbation_saliency"``,
``"sarfa"`` (``Occlusion`` needs its window: pass an instance).
"""

from __future__ import annotations

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.board_perturbations import BoardPerturbation, Structured
from tdhook_rl.attribution.conductance import Conductance
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.feature_ablation import FeatureAblation
from tdhook_rl.attribution.gradcam import GradCAM
from tdhook_rl.attribution.guided import GuidedBackprop, GuidedGradCAM
from tdhook_rl.attribution.input_x_gradient import InputXGradient
from tdhook_rl.attribution.integrated_gradients import IntegratedGradients
from tdhook_rl.attribution.kernel_shap import KernelShap
from tdhook_rl.attribution.lime import Lime
from tdhook_rl.attribution.lrp import LRP
from tdhook_rl.attribution.occlusion import Occlusion
from tdhook_rl.attribution.perturbation_saliency import PerturbationSaliency
from tdhook_rl.attribution.quadrature import RULES, quadrature
from tdhook_rl.attribution.saliency import Saliency
from tdhook_rl.attribution.sarfa import SARFA
from tdhook_rl.attribution.shapley import ExactShapley, ShapleyValueSampling
from tdhook_rl.attribution.smoothgrad import SmoothGrad

METHODS: dict[str, type[AttributionMethod]] = {
    "saliency": Saliency,
    "input_x_gradient": InputXGradient,
    "integrated_gradients": IntegratedGradients,
    "ig": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "feature_ablation": FeatureAblation,
    "exact_shapley": ExactShapley,
    "shapley_value_sampling": ShapleyValueSampling,
    "kernel_shap": KernelShap,
    "lime": Lime,
    "perturbation_saliency": PerturbationSaliency,
    "sarfa": SARFA,
    "lrp": LRP,
    "conductance": Conductance,
    "guided_backprop": GuidedBackprop,
}


def resolve_method(method: AttributionMethod | str) -> AttributionMethod:
    """Returns ``method`` if it is a method instance, or a default-configured one by name.

    Examples:
        >>> resolve_method("ig")
        IntegratedGradients(n_steps=50, rule='gausslegendre', baseline=0.0, chunk_size=None)
    """
    if isinstance(method, AttributionMethod):
        return method
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(
                f"unknown attribution method {method!r}; known names: {sorted(METHODS)}, "
                "or pass an instance such as IntegratedGradients(n_steps=32)."
            )
        return METHODS[method]()
    if isinstance(method, type) and issubclass(method, AttributionMethod):
        raise TypeError(f"pass an instance, e.g. {method.__name__}(), not the class itself")
    raise TypeError(f"method must be an AttributionMethod or a method name, got {method!r}")


__all__ = [
    "LRP",
    "METHODS",
    "RULES",
    "SARFA",
    "AttributionMethod",
    "AttributionResult",
    "BoardPerturbation",
    "Conductance",
    "ExactShapley",
    "FeatureAblation",
    "GradCAM",
    "GradientEngine",
    "GuidedBackprop",
    "GuidedGradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "KernelShap",
    "Lime",
    "Occlusion",
    "PerturbationSaliency",
    "Saliency",
    "ShapleyValueSampling",
    "SmoothGrad",
    "Structured",
    "quadrature",
    "resolve_method",
]
