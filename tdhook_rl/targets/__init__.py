"""What is explained: a per-sample scalar computed from the module's output TensorDict.

A target is called as ``target(output, reference)`` where ``output`` is the TensorDict the
wrapped module wrote during the attribution pass (flat batch) and ``reference`` holds the
entries of the original forward that the target asked for (``reference_keys``), e.g. the
action actually taken. It returns one scalar per sample: shape ``output.batch_size``, or that
shape with a trailing dimension of size 1.

Targets of :class:`tdhook_rl.Attributed` (and of the callback), probe labels
(:func:`~tdhook_rl.probes.labels_from`) and patching heads are given in one vocabulary,
parsed by :func:`as_target`:

* a key (``"state_value"``, ``("agents", "value")``): the entry itself (see :class:`Key`);
* a key followed by integer indices, ``("logits", 2)`` or ``(("sim", "qpos"), 1)``: the same
  as :class:`Index` (one entry of a vector output: a logit, a win-probability column);
* :class:`ActionLogProb`: the log-probability of the action that was taken;
* :class:`ActionLoc`: the location of the action distribution (deterministic continuous
  policies);
* :class:`ActionValue`: the value (Q) a value-based actor gives the action that was taken;
* :class:`Neuron`: a unit of a hidden site (or the sum of its units);
* any callable ``td -> Tensor`` (see :class:`FromCallable`).

Import every name from here (``from tdhook_rl.targets import Index``); the underscored modules
of this package are private.
"""

from __future__ import annotations

from tdhook_rl.targets._base import (
    FromCallable,
    Index,
    Key,
    ModuleTarget,
    Target,
    as_target,
    as_targets,
    per_sample,
)
from tdhook_rl.targets._neuron import Neuron
from tdhook_rl.targets._policy import ActionLoc, ActionLogProb
from tdhook_rl.targets._value import ActionValue

__all__ = [
    "ActionLoc",
    "ActionLogProb",
    "ActionValue",
    "FromCallable",
    "Index",
    "Key",
    "ModuleTarget",
    "Neuron",
    "Target",
    "as_target",
    "as_targets",
    "per_sample",
]
