"""How well the Connect Four agent plays: batched games against scripted players.

Run ``python -m tdhook_rl.agents.connect_four.evaluate`` to measure the shipped checkpoint
again and rewrite ``QUALITY.md`` (the numbers are deterministic for a given checkpoint).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.agents.connect_four.model import load
from tdhook_rl.envs.connect_four import ConnectFourEnv, greedy_action, random_action, winning_moves
from tdhook_rl.report.options import OPPONENTS  # the one list, also behind --opponent

__all__ = ["OPPONENTS", "evaluate", "play_games", "quality_report", "tactics"]

HERE = Path(__file__).parent


Act = Callable[[TensorDictBase, torch.Tensor], torch.Tensor]


def play_games(
    act: Act,
    opponent: str,
    games: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    *,
    restart: bool = True,
) -> Iterator[tuple[int, TensorDictBase, torch.Tensor, TensorDictBase]]:
    """Plays ``games`` batched games of an agent against a scripted player, ply by ply.

    The agent starts the even-numbered games. At each ply ``act(td, agent_turn)`` returns the
    agent's column for every game (only the entries where ``agent_turn`` is set are played),
    and the opponent's choice is drawn for every game from the env's generator, so two runs
    with the same seed see the same opponent.

    Args:
        act: the agent's move: ``(state, agent_turn [games] bool) -> action [games]``.
        opponent: one of :data:`OPPONENTS`.
        games: the batch of games.
        seed: seeds the env's generator (the opponent's random choices).
        device: where to play.
        restart: ``True``: 42 plies, a finished game restarts at once (each slot's first
            game is the one that counts); ``False``: every game is played once, finished
            games are left alone (``agent_turn`` is off for them) and the loop stops when all
            are over.

    Yields:
        ``(ply, position, agent_turn, step)``: the position moved from (``board``,
        ``player``, ``action``), whose turn it was, and the transition.

    Examples:
        >>> def first_legal(td, turn):
        ...     return td["action_mask"].float().argmax(-1)
        >>> plies = [ply for ply, *_ in play_games(first_legal, "random", 2, restart=False)]
        >>> 7 <= len(plies) <= 42
        True
    """
    if opponent not in OPPONENTS:
        raise ValueError(f"opponent must be one of {list(OPPONENTS)}, got {opponent!r}")
    env = ConnectFourEnv(batch_size=[games], device=device)
    env.set_seed(seed)
    agent_player = torch.arange(games, device=device) % 2  # 0: the agent starts
    over = torch.zeros(games, dtype=torch.bool, device=device)
    td = env.reset()
    for ply in range(6 * 7):
        agent_turn = (td["player"].squeeze(-1) == agent_player) & ~over
        mine = act(td, agent_turn)
        if opponent == "random":
            theirs = random_action(td["action_mask"], env.generator)
        else:
            theirs = greedy_action(td["board"], td["player"], td["action_mask"], env.generator)
        td["action"] = torch.where(agent_turn, mine, theirs)
        position = td.select("board", "player", "action")
        if restart:
            step, td = env.step_and_maybe_reset(td)
        else:
            step = env.step(td)
            td = step["next"]
            over = over | td["done"].squeeze(-1)
        yield ply, position, agent_turn, step
        if over.all():
            return


def _games(
    agent: nn.Module, opponent: str, games: int, seed: int, device: torch.device | str
) -> Iterator[tuple[TensorDictBase, torch.Tensor, TensorDictBase]]:
    """:func:`play_games` with the agent's best moves, restarting finished games."""

    def act(td: TensorDictBase, turn: torch.Tensor) -> torch.Tensor:
        return agent(td.select("observation", "action_mask"))["action"]

    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for _, position, agent_turn, step in play_games(act, opponent, games, seed, device):
            yield position, agent_turn, step


def evaluate(
    agent: nn.Module,
    opponent: str = "greedy",
    games: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Plays ``games`` batched games of the agent's best moves against a scripted player.

    The agent starts the even-numbered games and the opponent the odd-numbered ones; the
    first game of each slot of the batch counts.

    Args:
        agent: the agent of :mod:`.model` (any module writing ``action`` from
            ``observation`` and ``action_mask``).
        opponent: ``"random"`` (a uniformly random legal column) or ``"greedy"`` (wins at
            once if it can, else blocks an immediate win, else random).
        games: the number of games, all played in one batch.
        seed: seeds the opponent's random choices.
        device: where to play.

    Returns:
        ``{"win": ..., "draw": ..., "loss": ...}``, the agent's rates (summing to 1).

    Examples:
        >>> from tdhook_rl.agents.connect_four.model import make_agent
        >>> rates = evaluate(make_agent(), "random", games=20)
        >>> round(sum(rates.values()), 6)
        1.0
    """
    score = torch.zeros(games, device=device)  # +1 agent won, -1 lost, 0 draw
    finished = torch.zeros(games, dtype=torch.bool, device=device)
    for _, agent_turn, step in _games(agent, opponent, games, seed, device):
        reward = step["next", "reward"].squeeze(-1)  # to the player who moved
        done = step["next", "done"].squeeze(-1)
        score = torch.where(done & ~finished, torch.where(agent_turn, reward, -reward), score)
        finished |= done
    return {
        "win": (score > 0).float().mean().item(),
        "draw": (score == 0).float().mean().item(),
        "loss": (score < 0).float().mean().item(),
    }


def tactics(
    agent: nn.Module,
    opponent: str = "greedy",
    games: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """How often the agent wins at once when it can, and blocks when it must.

    Counted over the agent's moves in ``games`` games against ``opponent`` (see
    :func:`evaluate`).

    Args:
        agent, opponent, games, seed, device: as in :func:`evaluate`.

    Returns:
        ``{"wins_taken": ..., "wins_available": ..., "blocks_made": ..., "blocks_needed": ...}``:
        the share of positions with an immediate win where the agent took one (out of
        ``wins_available`` positions), and of positions where only a block avoids an
        immediate loss where the agent blocked (out of ``blocks_needed``).

    Examples:
        >>> from tdhook_rl.agents.connect_four.model import make_agent
        >>> sorted(tactics(make_agent(), games=10))
        ['blocks_made', 'blocks_needed', 'wins_available', 'wins_taken']
    """
    counts = torch.zeros(4, device=device)  # available, taken, needed, made
    for position, agent_turn, _ in _games(agent, opponent, games, seed, device):
        stone = 1 - 2 * position["player"].squeeze(-1).to(torch.int8)
        win = winning_moves(position["board"], stone)
        block = winning_moves(position["board"], -stone)
        action = position["action"].unsqueeze(-1)
        can_win = win.any(-1) & agent_turn
        must_block = block.any(-1) & ~win.any(-1) & agent_turn
        took = win.gather(-1, action).squeeze(-1)
        blocked = block.gather(-1, action).squeeze(-1)
        counts += torch.stack(
            [can_win.sum(), (can_win & took).sum(), must_block.sum(), (must_block & blocked).sum()]
        )
    available, taken, needed, made = counts.tolist()
    return {
        "wins_taken": taken / max(available, 1),
        "wins_available": available,
        "blocks_made": made / max(needed, 1),
        "blocks_needed": needed,
    }


def quality_report(agent: nn.Module, meta: dict, games: int = 500, device: str = "cpu") -> str:
    """Measures the agent (:func:`evaluate`, :func:`tactics`) and writes the Markdown report.

    Args:
        agent: the trained agent.
        meta: the training summary stored in the checkpoint (rounds, plies, minutes, ...).
        games: games per opponent.
        device: where to play.

    Returns:
        the text of ``QUALITY.md``.
    """
    results = {name: evaluate(agent, name, games, seed=10_000, device=device) for name in OPPONENTS}
    rows = "\n".join(
        f"| {name} | {r['win']:.1%} | {r['draw']:.1%} | {r['loss']:.1%} |"
        for name, r in results.items()
    )
    tact = {name: tactics(agent, name, games, seed=10_000, device=device) for name in OPPONENTS}
    tactic_rows = "\n".join(
        f"| {name} | {t['wins_taken']:.1%} of {t['wins_available']:.0f} "
        f"| {t['blocks_made']:.1%} of {t['blocks_needed']:.0f} |"
        for name, t in tact.items()
    )
    knobs = ", ".join(
        f"{k}={meta[k]}" for k in ("envs", "horizon", "epochs", "minibatch", "lr", "lmbda", "gamma")
    )
    header = (
        f"Trained by `python -m tdhook_rl.agents.connect_four.train` (seed {meta['seed']}): "
        f"{meta['rounds']} rounds of PPO, {meta['frames']:,} plies, {meta['minutes']:.1f} "
        f"minutes on `{meta['device']}` (one torch thread, on a shared 2-core machine).\n"
        f"One network plays both sides; {meta['greedy_fraction']:.1%} of the games are "
        f"against the one-ply greedy player and {meta['random_fraction']:.1%} against the "
        "random player (the scripted moves train only the win head).\n"
        f"Settings: {knobs}."
    )
    return f"""# Connect Four agent: measured quality

{header}

## Win rates

{games} batched games against each scripted opponent, the agent playing its most probable
legal move (`ExplorationType.DETERMINISTIC`) and starting every other game.

| opponent | win | draw | loss |
|---|---|---|---|
{rows}

- *random*: a uniformly random legal column.
- *greedy*: the one-ply greedy player: wins at once if it can, else blocks an immediate win
  of the agent, else a random legal column.

## Tactics

Over the agent's moves in the same games: how often it wins at once when it can, and how
often it blocks when the opponent threatens to win at once (and it has no win itself).

| opponent | wins taken | blocks made |
|---|---|---|
{tactic_rows}

Reproduce: `python -m tdhook_rl.agents.connect_four.evaluate` (rewrites this file).
"""


def main(argv: list[str] | None = None) -> None:
    """The command line: measures a checkpoint and writes ``QUALITY.md`` beside it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="the folder of checkpoint.pt")
    parser.add_argument("--games", type=int, default=500, help="games per opponent")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = args.out / "checkpoint.pt"
    agent = load(args.device, checkpoint=checkpoint)
    meta = torch.load(checkpoint, weights_only=True)["meta"]
    report = quality_report(agent, meta, args.games, args.device)
    (args.out / "QUALITY.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
