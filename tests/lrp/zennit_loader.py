"""Imports zennit 0.5.1 without torchvision (which cannot be installed here), as the LRP
benchmark does (:func:`benchmarks.lrp.import_zennit`: stub ``torchvision`` modules present only
while ``import zennit`` runs); skips the test where zennit is missing."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.harness import ContestantUnavailable
from benchmarks.lrp import import_zennit


def load_zennit() -> Any:
    """The ``zennit`` package (its ``__init__`` imports rules, composites, canonizers and
    attribution); skips the test if it is missing."""
    try:
        return import_zennit()
    except ContestantUnavailable as err:
        pytest.skip(f"zennit 0.5.1 is not installed ({err}): pip install --no-deps zennit==0.5.1")
