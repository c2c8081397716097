"""Imports zennit 0.5.1 without torchvision (which cannot be installed here).

zennit imports ``torchvision.models.resnet`` at import time (for its ResNet canonizer): stub
``torchvision``, ``torchvision.models`` and ``torchvision.models.resnet`` modules (with dummy
``Bottleneck``/``BasicBlock`` classes) are put into ``sys.modules`` only while ``import zennit``
runs, then removed again.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

_STUBS = ("torchvision", "torchvision.models", "torchvision.models.resnet")


def load_zennit() -> Any:
    """The ``zennit`` package (with ``zennit.rules``, ``zennit.composites``,
    ``zennit.canonizers``, ``zennit.attribution`` imported); skips the test if it is missing."""
    if "zennit" in sys.modules:
        return sys.modules["zennit"]
    saved = {name: sys.modules.get(name) for name in _STUBS}
    if saved["torchvision"] is None:
        vision = types.ModuleType("torchvision")
        models = types.ModuleType("torchvision.models")
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (), {})  # type: ignore[attr-defined]
        resnet.BasicBlock = type("BasicBlock", (), {})  # type: ignore[attr-defined]
        vision.models = models  # type: ignore[attr-defined]
        models.resnet = resnet  # type: ignore[attr-defined]
        sys.modules.update(dict(zip(_STUBS, (vision, models, resnet), strict=True)))
    try:
        import zennit
        import zennit.attribution
        import zennit.canonizers
        import zennit.composites
        import zennit.rules
    except ImportError as err:
        pytest.skip(f"zennit 0.5.1 is not installed ({err}): pip install --no-deps zennit==0.5.1")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return zennit
