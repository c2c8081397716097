"""A wrapper that *is* its wrapped module as far as parameters, checkpoints and weight sync go."""

from __future__ import annotations

from typing import Any

from tensordict.nn import TensorDictModuleBase
from torch import nn


class TransparentWrapper(TensorDictModuleBase):
    """Base class of tdhook_rl's wrappers (``Attributed`` and later ``Recorded``, ``Intervened``).

    The wrapper shares the wrapped module's parameter, buffer and child dictionaries instead of
    registering it as a child. Consequences, all intended:

    * ``state_dict()`` keys, ``named_parameters()``, ``named_modules()`` paths and
      ``TensorDict.from_module`` are identical to the raw module's, so a raw checkpoint loads
      into the wrapper and collectors' ``update_policy_weights_`` works with raw weights;
    * ``.to()``, ``.train()`` and ``.eval()`` act on the wrapped module;
    * attributes the wrapper lacks (``get_dist``, ``log_prob_keys``, ``dist_sample_keys``, ...)
      are looked up on the wrapped module, so loss modules accept the wrapper as an actor.

    Nothing is ever written onto the user's module.
    """

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, TensorDictModuleBase):
            raise TypeError(
                f"{type(self).__name__} wraps a TensorDict module (TensorDictModule, "
                f"ProbabilisticActor, TensorDictSequential, ...), got {type(module).__name__}. "
                "Wrap a plain nn.Module first: "
                "TensorDictModule(net, in_keys=[...], out_keys=[...])."
            )
        super().__init__()
        self.__dict__["_wrapped"] = module
        self._parameters = module._parameters
        self._buffers = module._buffers
        self._modules = module._modules
        self.training = module.training

    @property
    def wrapped(self) -> TensorDictModuleBase:
        """The wrapped module, unchanged."""
        return self.__dict__["_wrapped"]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = self.__dict__.get("_wrapped")
            if wrapped is None or name.startswith("__"):
                raise
            return getattr(wrapped, name)

    def train(self, mode: bool = True) -> TransparentWrapper:
        super().train(mode)
        self.wrapped.train(mode)
        return self

    def _extra_repr_items(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        items = {"module": type(self.wrapped).__name__, **self._extra_repr_items()}
        body = ", ".join(f"{k}={v}" for k, v in items.items())
        return f"{type(self).__name__}({body})"
