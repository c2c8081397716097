"""Evaluation callbacks for TorchRL trainers and plain training loops."""

from tdhook_rl.callbacks.evaluation import InterpretabilityCallback, ProbeSpec

__all__ = ["InterpretabilityCallback", "ProbeSpec"]
