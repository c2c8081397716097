"""Layer-wise relevance propagation (LRP): rules, composites, canonizers and the method.

``LRP(composite)`` is an attribution method like the others
(``thr.Attributed(policy, LRP(EpsilonPlus()), inputs=[...], targets={...})``): relevance of
every target of every head from one forward and one batched backward, at input entries or
hidden sites. :mod:`.rules` holds the rule interface, pass-through rules and the mechanism
(:func:`ruling`), :mod:`.layer_rules` the rules of linear layers and LayerNorm,
:mod:`.composites` which rule goes where, :mod:`.canonizers` the merged layers (batch norm).
"""

from __future__ import annotations

from tdhook_rl.attribution.lrp.canonizers import Canonizer, Fusion, MergeBatchNorm
from tdhook_rl.attribution.lrp.composites import (
    At,
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    applying,
)
from tdhook_rl.attribution.lrp.conditional import (
    ConditionalLRP,
    Conditioned,
    channel_relevance,
    top_channels,
)
from tdhook_rl.attribution.lrp.layer_rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LayerNormRule,
    WSquare,
    ZBox,
    ZPlus,
)
from tdhook_rl.attribution.lrp.method import LRP
from tdhook_rl.attribution.lrp.recurrent import GRURule, LSTMRule
from tdhook_rl.attribution.lrp.rules import Gradient, Pass, Rule, SplitPass, ruling, with_relevance

__all__ = [
    "LRP",
    "AlphaBeta",
    "At",
    "Canonizer",
    "Composite",
    "ConditionalLRP",
    "Conditioned",
    "Epsilon",
    "EpsilonAlpha2Beta1",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "Flat",
    "Fusion",
    "GRURule",
    "Gamma",
    "Gradient",
    "LSTMRule",
    "LayerNormRule",
    "MergeBatchNorm",
    "Pass",
    "Rule",
    "SplitPass",
    "WSquare",
    "ZBox",
    "ZPlus",
    "applying",
    "channel_relevance",
    "ruling",
    "top_channels",
    "with_relevance",
]
