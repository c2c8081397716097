"""Concept relevance (CRP) on the shipped Connect Four agent: the conv channel behind "block
this column", where on the board it looks, and what removing it does.

1. Positions where the agent must block (the opponent threatens four in a row next move, the
   agent cannot win at once) and does, from games against the one-ply greedy player.
2. LRP (``EpsilonPlus``: the 4x4 convolution z+, dense layers epsilon) of the blocking move's
   logit to the convolution's output (``module.0.module.conv``, 64 channels): per position,
   the channel carrying the most relevance for the decision (:func:`top_channels`).
3. CRP: the relevance at the board *through that channel only* (``ConditionalLRP``), next to
   the full LRP map, as board heatmaps (``tdhook_rl.viz.connect_four_heatmaps``).
4. The channel is zeroed through ``tdhook_rl.Intervened``: how often the agent still blocks,
   and by how much the block's logit falls, against zeroing the *least* relevant channel and
   a random channel; then a few games against the greedy player with the channel most often
   selected zeroed (win rate and blocks made, ``agents/connect_four/evaluate.py``).

Run:  python examples/concept_relevance.py [--games 64] [--out crp_results]
Writes: crp_results/concept_relevance.json and concept_relevance.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl.agents.connect_four import load
from tdhook_rl.agents.connect_four.evaluate import evaluate, play_games, tactics
from tdhook_rl.attribution.lrp import LRP, EpsilonPlus
from tdhook_rl.attribution.lrp.conditional import ConditionalLRP, channel_relevance, top_channels
from tdhook_rl.envs.connect_four import observation_from_board, winning_moves
from tdhook_rl.targets import ActionValue
from tdhook_rl.viz import connect_four_heatmaps

SITE = "module.0.module.conv"  # the 4x4 convolution, (N, 64, 3, 4) before its ReLU


def blocking_positions(agent: Any, games: int, seed: int) -> TensorDict:
    """Positions where the agent had to block an immediate win, and blocked."""

    def act(td, turn):
        return agent(td.select("observation", "action_mask"))["action"]

    found = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for _, position, turn, _ in play_games(act, "greedy", games, seed, restart=False):
            stone = 1 - 2 * position["player"].squeeze(-1).to(torch.int8)
            block = winning_moves(position["board"], -stone)
            win = winning_moves(position["board"], stone)
            action = position["action"]
            blocked = block.gather(-1, action[:, None]).squeeze(-1)
            keep = turn & block.any(-1) & ~win.any(-1) & blocked
            found.append(position[keep])
    out = torch.cat(found)
    return TensorDict(
        board=out["board"],
        observation=observation_from_board(out["board"], out["player"]),
        action_mask=out["board"][..., 0, :] == 0,
        action=out["action"],
        batch_size=out.batch_size,
    )


def zeroing(channels: torch.Tensor) -> Any:
    """An intervention zeroing one channel per position (``channels [N]``) at the site."""

    def zero(activation: torch.Tensor, td: Any) -> torch.Tensor:
        keep = torch.ones_like(activation)
        keep[torch.arange(activation.shape[0]), channels] = 0.0
        return activation * keep

    return zero


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=64, help="games to find blocks in")
    parser.add_argument("--eval-games", type=int, default=100, help="games with the channel off")
    parser.add_argument("--rows", type=int, default=3, help="positions drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("crp_results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    agent = load()
    positions = blocking_positions(agent, args.games, args.seed)
    n = positions.shape[0]
    if n == 0:
        raise RuntimeError("no blocking position found: play more games (--games)")
    td = positions.select("observation", "action_mask")
    # the logit of the blocking move (the agent's own move in these positions)
    target = {"block": ActionValue(value_key="logits", action_key="action")}
    composite = EpsilonPlus()

    def attribute(method: Any, at: str) -> torch.Tensor:
        out = thr.Attributed(agent, method, inputs=[at], targets=target)(td.clone())
        return out["attribution", "block", at]

    at_site = attribute(LRP(composite), SITE)  # (N, 64, 3, 4)
    per_position = torch.stack([channel_relevance(r[None], 1) for r in at_site])  # (N, 64)
    best = per_position.argmax(-1)  # the concept of each position's decision
    worst = per_position.argmin(-1)
    random = torch.randint(0, per_position.shape[1], (n,))
    overall = top_channels(at_site, 3, batch_dims=1)  # most relevant over all the blocks

    # where the channel looks: CRP through each position's own channel, one backward each row
    rows = list(range(min(args.rows, n)))
    crp_maps = []
    for i in rows:
        method = ConditionalLRP(composite, {SITE: [int(best[i])]})
        out = thr.Attributed(agent, method, inputs=["observation"], targets=target)(
            td[i : i + 1].clone()
        )
        crp_maps.append(out["attribution", "block", "observation"][0].sum(0))
    full = attribute(LRP(composite), "observation").sum(-3)  # (N, 6, 7)
    fig = connect_four_heatmaps(
        positions["board"][rows],
        {"LRP": full[rows], "CRP (top channel)": torch.stack(crp_maps)},
        [int(a) for a in positions["action"][rows]],
        row_labels=[f"channel {int(best[i])}" for i in rows],
        colorbar_label="relevance (sum over planes)",
        suptitle="Blocking moves: all relevance vs through the top conv channel",
    )
    fig.savefig(args.out / "concept_relevance.png")

    # zero the channel: does the agent still block?
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        plain = agent(td.clone())
        effects = {}
        for name, channels in (("top", best), ("least", worst), ("random", random)):
            changed = thr.Intervened(agent, {SITE: zeroing(channels)})(td.clone())
            column = positions["action"][:, None]
            drop = plain["logits"].gather(-1, column) - changed["logits"].gather(-1, column)
            effects[name] = {
                "still_blocks": float((changed["action"] == positions["action"]).float().mean()),
                "block_logit_drop": float(drop.mean()),
            }
    share = float(per_position.gather(-1, best[:, None]).sum() / per_position.sum())
    ablated = thr.Intervened(
        agent, {SITE: thr.interventions.Ablate(units=[int(overall[0])], dim=-3)}
    )
    games = {
        "plain": {**evaluate(agent, "greedy", args.eval_games, args.seed),
                  **tactics(agent, "greedy", args.eval_games, args.seed)},
        f"channel {int(overall[0])} off": {
            **evaluate(ablated, "greedy", args.eval_games, args.seed),
            **tactics(ablated, "greedy", args.eval_games, args.seed),
        },
    }  # fmt: skip
    summary = {
        "blocking_positions": n,
        "site": SITE,
        "top_channels_overall": overall.tolist(),
        "top_channel_share_of_site_relevance": round(share, 4),
        "zeroing_one_channel": effects,
        "games_vs_greedy": games,
        "rows": [{"channel": int(best[i]), "column": int(positions["action"][i])} for i in rows],
    }
    print(json.dumps(summary, indent=1))
    (args.out / "concept_relevance.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
