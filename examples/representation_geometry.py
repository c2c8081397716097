"""Representation geometry of the shipped Connect Four agent: intrinsic dimension per layer and
CKA between layers and against a randomly re-initialized copy of the network.

Positions come from ``--games`` batched games, ``--plies`` plies each, of the agent sampling its
moves, a ``--explore`` fraction of them replaced by random legal moves (the agent alone repeats
its favourite lines); repeated positions (every game starts from the same empty board) are kept
once. ``thr.Recorded`` writes the activations of
the trunk's convolution (before its ReLU, 64 x 3 x 4 units), the two 256-wide layers of its
MLP and the value head's hidden layer. Reported:

- the TwoNN intrinsic dimension of each recorded layer (Facco et al. 2017; the paper's linear
  fit with 10% of the ratios discarded, and the maximum-likelihood estimate beside it), with
  a spread from ``--splits`` disjoint subsets of the positions (boxes in the figure; a subset
  holds fewer points, and TwoNN estimates shrink with the sample), and the same for a
  randomly re-initialized copy of the network;
- per window of the convolution (each of its 3 x 4 positions sees one 4 x 4 part of the
  board), the dimension of its 64 channels there, over each window's distinct contents (many
  positions share one). The board itself is left out (it is binary: most of its
  nearest-neighbour ratios tie at 1, where TwoNN's continuous model fails);
- linear CKA between every pair of layers and the board (``observation``) (Kornblith et al.
  2019; biased and debiased), and between each layer of the trained agent and the same layer
  of ``thr.probes.randomized_copy`` (same positions): how much of a layer's geometry
  training made.

Run:  python examples/representation_geometry.py [--games 256] [--plies 30] [--out geometry]
Writes: OUT/representation_geometry.json and OUT/representation_geometry.png

Run time on a shared 2-core machine: about 25 s at the defaults (about 4,100 distinct positions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.concepts import cka_matrix, linear_cka, twonn
from tdhook_rl.envs.connect_four import ConnectFourEnv, random_action

SITES = {
    "conv": "module.0.module.conv",
    "trunk h1": "module.0.module.mlp.1",
    "trunk h2": "module.0.module.mlp.3",
    "value h1": "module.2.module.mlp.1",
}


def positions(agent: Any, games: int, plies: int, explore: float, seed: int) -> Any:
    """The distinct positions of ``games`` games of ``plies`` plies each."""
    torch.manual_seed(seed)
    env = ConnectFourEnv(batch_size=[games])
    env.set_seed(seed)

    def policy(td: Any) -> Any:
        td = agent(td)
        swap = torch.rand(td.batch_size) < explore
        return td.set("action", torch.where(swap, random_action(td["action_mask"]), td["action"]))

    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(plies, policy, break_when_any_done=False)
    flat = rollout.reshape(-1)
    _, inverse = torch.unique(flat["observation"].flatten(1), dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin")
    return flat[first.sort().values]


def layers(agent: Any, states: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``{layer: [N, units]}`` (the board and each recorded site, flattened) and the conv map
    ``[N, channels, 3, 4]``."""
    with torch.no_grad():
        td = thr.Recorded(agent, SITES)(states.select("observation", "action_mask").clone())
    out = {"observation": states["observation"].flatten(1)}
    out.update({name: td["activations", name].flatten(1) for name in SITES})
    return out, td["activations", "conv"]


def per_window(conv: torch.Tensor) -> list[list[float]]:
    """TwoNN of the channel vector at each of the 3 x 4 conv windows. Distinct positions often
    share a window's contents, so each window's vectors are deduplicated first (rounded to
    1e-4: equal windows give activations equal up to float rounding)."""
    n, c, h, w = conv.shape
    windows = conv.permute(2, 3, 0, 1).reshape(h * w, n, c)  # (N, C, H, W) -> (H*W, N, C)
    dims = [float(twonn(torch.unique((v * 1e4).round(), dim=0) / 1e4)) for v in windows]
    return torch.tensor(dims).reshape(h, w).tolist()


def dimension(x: torch.Tensor, splits: int) -> dict[str, Any]:
    parts = x[: len(x) // splits * splits].reshape(splits, -1, x.shape[-1])  # (splits, n, d)
    per_split = twonn(parts)
    return {
        "twonn_fit": float(twonn(x)),
        "twonn_mle": float(twonn(x, method="mle")),
        "split_fit": per_split.tolist(),
        "units": x.shape[-1],
        "active_units": int((x.std(0) > 1e-6).sum()),
    }


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=256)
    parser.add_argument("--plies", type=int, default=30)
    parser.add_argument("--explore", type=float, default=0.3, help="fraction of random moves")
    parser.add_argument("--splits", type=int, default=4, help="disjoint subsets for a spread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("geometry"))
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    agent = agents.load("connect_four")
    states = positions(agent, args.games, args.plies, args.explore, args.seed)
    trained, conv = layers(agent, states)
    random, random_conv = layers(thr.probes.randomized_copy(agent, seed=args.seed), states)
    names = list(trained)
    summary: dict[str, Any] = {
        "positions": len(states),
        "layers": names,
        # the board is binary: most of its nearest-neighbour ratios tie at 1, TwoNN does not apply
        "intrinsic_dimension": {n: dimension(trained[n], args.splits) for n in SITES},
        "random_network_dimension": {n: float(twonn(random[n])) for n in SITES},
        # one 4x4 window of the board per cell: rows top to bottom, columns left to right
        "conv_window_dimension": per_window(conv),
        "random_conv_window_dimension": per_window(random_conv),
        "cka": cka_matrix(trained).tolist(),
        "cka_debiased": cka_matrix(trained, debiased=True).tolist(),
        "cka_trained_vs_random": {n: float(linear_cka(trained[n], random[n])) for n in SITES},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "representation_geometry.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure(summary, args.out / "representation_geometry.png")
    for n in SITES:
        d = summary["intrinsic_dimension"][n]
        print(
            f"{n:<12} {d['units']:>5} units  TwoNN {d['twonn_fit']:6.2f} (MLE {d['twonn_mle']:.2f})"
        )
    print(f"{len(states)} positions; wrote {args.out / 'representation_geometry.json'}")
    return summary


def figure(summary: dict[str, Any], path: Path) -> None:
    from tdhook_rl.viz._mpl import pyplot

    plt = pyplot()
    names = summary["layers"]
    fig, (left, right, windows) = plt.subplots(
        1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [1.2, 1.2, 0.8]}
    )
    dims, sites = summary["intrinsic_dimension"], list(summary["intrinsic_dimension"])
    left.boxplot([dims[n]["split_fit"] for n in sites], positions=range(len(sites)))
    left.plot(range(len(sites)), [dims[n]["twonn_fit"] for n in sites], "o-", label="trained")
    rand = summary["random_network_dimension"]
    left.plot(range(len(sites)), [rand[n] for n in sites], "s--", label="random network")
    left.set_xticks(range(len(sites)), sites, rotation=30, ha="right")
    left.set_ylabel("intrinsic dimension (TwoNN)")
    left.set_title(f"Connect Four, {summary['positions']} positions")
    left.legend()
    matrix = torch.tensor(summary["cka"])
    image = right.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis")
    right.set_xticks(range(len(names)), names, rotation=30, ha="right")
    right.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            right.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                       color="white" if matrix[i, j] < 0.6 else "black")  # fmt: skip
    right.set_title("linear CKA between layers")
    fig.colorbar(image, ax=right)
    grid = torch.tensor(summary["conv_window_dimension"])
    shown = windows.imshow(grid.numpy(), cmap="magma")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            windows.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                         color="white" if grid[i, j] < grid.mean() else "black")  # fmt: skip
    windows.set_xticks(range(grid.shape[1]), [f"cols {j}-{j + 3}" for j in range(grid.shape[1])],
                       rotation=30, ha="right")  # fmt: skip
    windows.set_yticks(range(grid.shape[0]), [f"rows {i}-{i + 3}" for i in range(grid.shape[0])])
    windows.set_title("TwoNN per conv window")
    fig.colorbar(shown, ax=windows)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
