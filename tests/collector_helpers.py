"""Closing TorchRL collectors completely in tests."""

from __future__ import annotations

from typing import Any

import torch


def shutdown_collector(collector: Any) -> None:
    """``collector.shutdown()`` plus what TorchRL 0.14.1's multi-process shutdown leaves behind.

    ``MultiSyncCollector.shutdown`` neither shuts its weight-sync schemes down nor keeps the
    torch thread count: it sets it to ``min(threads at import, threads + workers)``. A scheme
    left open shuts itself down in ``__del__``, which puts a message on a multiprocessing
    queue and so starts the queue's feeder thread; when that ``__del__`` runs during
    interpreter shutdown, ``Thread.start`` waits forever and pytest never exits (seen here:
    py-spy showed ``WeightSyncScheme.__del__ -> Queue.put -> Thread.start`` after the tests
    had passed). Closing the schemes here, while the interpreter is alive, avoids that.
    """
    threads = torch.get_num_threads()
    try:
        collector.shutdown()
    finally:
        schemes = getattr(collector, "_weight_sync_schemes", None) or {}
        for scheme in schemes.values():
            scheme.shutdown()
        torch.set_num_threads(threads)
