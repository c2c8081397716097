"""Building blocks shared by every tdhook_rl wrapper, one concept a module: keys
(:mod:`~tdhook_rl.core.keys`), grad modes (:mod:`~tdhook_rl.core.grad_mode`), transparent
wrapping (:mod:`~tdhook_rl.core.wrapper`), sites (:mod:`~tdhook_rl.core.sites`), interception
(:mod:`~tdhook_rl.core.intercept`), tensors inside ``vmap`` (:mod:`~tdhook_rl.core.vmap`) and
the logger registry (:mod:`~tdhook_rl.core.loggers`).

Each name is imported from its own module (``from tdhook_rl.core.keys import as_key``); this
package re-exports nothing, so importing the torch-free ones (the logger registry, for the
command's ``--help``) loads no torch.
"""
