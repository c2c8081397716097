"""A method's own random generators, shared by every method that draws samples (SmoothGrad's
noise, the sampled coalitions of ShapleyValueSampling, KernelShap and Lime)."""

from __future__ import annotations

from typing import Any, cast

import torch


class Seeded:
    """One generator per device, seeded on first use: drawing never uses (or moves) the
    global generator, so wrapping a policy never changes the actions it samples. The
    generators are re-created and re-seeded after unpickling."""

    seed: int
    _generators: dict[torch.device, torch.Generator]

    def _seeded(self, seed: int) -> None:
        self.seed = seed
        self._generators = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator for ``device``, created (and seeded) on first use."""
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __getstate__(self) -> dict[str, Any]:
        state = cast(dict[str, Any], super().__getstate__())  # a dict: no __slots__ here
        return {**state, "_generators": {}}
