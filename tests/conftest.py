import pytest
import torch

BATCH_SHAPES = [(), (5,), (4, 3)]


@pytest.fixture(params=BATCH_SHAPES, ids=lambda s: f"batch{tuple(s)}")
def batch_shape(request) -> tuple[int, ...]:
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
