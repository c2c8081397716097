"""Reference environments (installed as ``tdhook_rl.envs``, source in the top-level ``envs/``).

Used by the examples, the benchmarks and the ``tdhook-rl`` command.
"""
