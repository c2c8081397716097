"""Activations: recording them inside rollouts, probing what they encode, intervening on them.

The modules here define the names; each has one public home: ``tdhook_rl.Recorded``,
``tdhook_rl.Intervened``, ``tdhook_rl.get`` / ``set`` / ``intervene``,
``tdhook_rl.activation_patching``, :mod:`tdhook_rl.probes` and :mod:`tdhook_rl.interventions`.
"""
