"""Building blocks shared by every tdhook_rl wrapper: keys, grad modes, transparent wrapping;
sites (:mod:`tdhook_rl.core.sites`) and interception (:mod:`tdhook_rl.core.intercept`)."""

from tdhook_rl.core.grad_mode import gradients_enabled, inside_functional_transform
from tdhook_rl.core.keys import as_key, key_tuple
from tdhook_rl.core.wrapper import TransparentWrapper

__all__ = [
    "TransparentWrapper",
    "as_key",
    "gradients_enabled",
    "inside_functional_transform",
    "key_tuple",
]
