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

    Nothing is ever written onto the user's module: assigning a submodule or a parameter to
    the wrapper (which would land in the shared dictionaries) is refused.

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> wrapper = TransparentWrapper(TensorDictModule(torch.nn.Linear(2, 2), ["x"], ["y"]))
        >>> wrapper.extra = torch.nn.Linear(2, 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        AttributeError: cannot set submodule 'extra' on TransparentWrapper: ...
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

    def __setattr__(self, name: str, value: Any) -> None:
        new_parameter = isinstance(value, nn.Parameter) and name not in self._parameters
        if "_wrapped" in self.__dict__ and (isinstance(value, nn.Module) or new_parameter):
            raise self._refused("submodule" if isinstance(value, nn.Module) else "parameter", name)
        super().__setattr__(name, value)

    def register_module(self, name: str, module: nn.Module | None) -> None:
        raise self._refused("submodule", name)

    add_module = register_module

    def register_parameter(self, name: str, param: nn.Parameter | None) -> None:
        if "_wrapped" in self.__dict__:
            raise self._refused("parameter", name)
        super().register_parameter(name, param)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        if "_wrapped" in self.__dict__:
            raise self._refused("buffer", name)
        super().register_buffer(name, tensor, persistent)

    def _refused(self, what: str, name: str) -> AttributeError:
        return AttributeError(
            f"cannot set {what} {name!r} on {type(self).__name__}: the wrapper shares the "
            f"wrapped {type(self.__dict__.get('_wrapped')).__name__}'s submodules, parameters "
            "and buffers, so it would be added to your module. Set it on the module itself "
            "(wrapper.wrapped), or keep it outside the wrapper."
        )

    def __delattr__(self, name: str) -> None:
        if name in self._modules or name in self._parameters or name in self._buffers:
            raise AttributeError(
                f"cannot delete {name!r} through {type(self).__name__}: it belongs to the "
                "wrapped module; delete it there (wrapper.wrapped) if you mean to."
            )
        super().__delattr__(name)

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
