"""Evaluation callbacks for TorchRL trainers and plain training loops.

:class:`InterpretabilityCallback` takes a few grouped options: :class:`AttributionSpec` (what
to explain), :class:`Schedule` (when), :class:`ProbeSpec` (what to probe),
:class:`Interventions` (which effects to measure) and :class:`LogTo` (where results go).
"""

from tdhook_rl.callbacks.checkpoints import load_checkpoints
from tdhook_rl.callbacks.evaluation import InterpretabilityCallback
from tdhook_rl.callbacks.options import (
    AttributionSpec,
    CheckpointSpec,
    Interventions,
    LogTo,
    ProbeSpec,
    Schedule,
)

__all__ = [
    "AttributionSpec",
    "CheckpointSpec",
    "InterpretabilityCallback",
    "Interventions",
    "LogTo",
    "ProbeSpec",
    "Schedule",
    "load_checkpoints",
]
