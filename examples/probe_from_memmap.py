"""Record a million transitions to disk and fit probes without holding them in memory.

A TorchRL ``Collector`` runs the shipped double-pendulum agent wrapped in
``tdhook_rl.Recorded`` (both hidden layers of the actor); every batch goes into a
``ReplayBuffer`` backed by ``LazyMemmapStorage`` (memory-mapped files under ``--scratch``).
``fit_probes`` then reads the buffer in slices of ``--batch-size`` transitions: ridge
probes are solved from streamed sufficient statistics (the same solution as in memory),
and held-out episodes are chosen by a seeded hash of the collector's trajectory ids.

Run:  python examples/probe_from_memmap.py [--frames 1000000] [--scratch /tmp/tdhook_rl_memmap]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from torchrl.collectors import Collector
from torchrl.data import LazyMemmapStorage, ReplayBuffer
from torchrl.envs.utils import ExplorationType
from tqdm.auto import tqdm

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.probes import fit_probes
from tdhook_rl.report.double_pendulum import LABELS, hidden_sites


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=50_000, help="transitions per slice")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/tdhook_rl_memmap"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    agent = agents.load("double_pendulum")
    sites = {f"actor h{i + 1}": s for i, s in enumerate(hidden_sites(agent.actor, "module"))}
    policy = thr.Recorded(agent.actor, sites)
    storage = LazyMemmapStorage(args.frames, scratch_dir=args.scratch)
    buffer = ReplayBuffer(storage=storage, batch_size=args.batch_size)
    collector = Collector(
        lambda: agent.make_env(args.envs, seed=args.seed),
        policy,
        frames_per_batch=10_000,
        total_frames=args.frames,
        exploration_type=ExplorationType.DETERMINISTIC,
    )
    start = time.perf_counter()
    with tqdm(total=args.frames, desc="recording", unit="frames") as bar:
        for batch in collector:
            buffer.extend(
                batch.reshape(-1)
                .exclude("next", ("collector", "mask"), inplace=False)
                .set(("next", "done"), batch["next", "done"].reshape(-1, 1))
            )
            bar.update(batch.numel())
    collector.shutdown()
    recorded = time.perf_counter() - start
    print(f"recorded {len(buffer)} transitions in {recorded:.0f} s to {args.scratch}")
    results = fit_probes(buffer, list(sites), LABELS, batch_size=args.batch_size, seed=args.seed)
    print(results)
    print(
        f"total {time.perf_counter() - start:.0f} s, peak resident memory {peak_rss_mb():.0f} MB "
        f"(the recorded data: {disk_mb(args.scratch):.0f} MB on disk)"
    )


if __name__ == "__main__":
    main()
