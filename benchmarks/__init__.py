"""Benchmarks of tdhook_rl against captum, tdhook and hand-written floors.

Run ``python -m benchmarks run [--quick] [--only NAME] [--device cpu|cuda]`` from the
repository root; see ``benchmarks/README.md``.
"""
