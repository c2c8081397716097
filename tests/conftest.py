import pytest
import torch

BATCH_SHAPES = [(), (5,), (4, 3)]


@pytest.fixture(params=BATCH_SHAPES, ids=lambda s: f"batch{tuple(s)}")
def batch_shape(request) -> tuple[int, ...]:
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: on a 2-core machine shared with collector worker processes, two
    threads per process spin against each other and slow small matmuls many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
