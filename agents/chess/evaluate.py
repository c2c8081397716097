"""Evaluation of the chess agent on labelled positions: agreement with Stockfish's move and
calibration of the value head (used by ``train.py`` for ``QUALITY.md``, and by the tests).

Examples:
    >>> from tdhook_rl.agents.chess.model import make_agent
    >>> from tdhook_rl.agents.chess.train import encode_positions
    >>> start = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
    >>> data = encode_positions([start] * 4, ["e2e4"] * 4)
    >>> data["wdl"] = torch.tensor([[0.0, 1.0, 0.0]] * 4)
    >>> metrics = evaluate(make_agent(), data)
    >>> round(metrics["random_top1"], 3)
    0.05
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ActorValueOperator

from tdhook_rl.agents.chess.data import HELDOUT_EVERY
from tdhook_rl.envs.chess import N_MOVE_CODES, action_to_move, encode_fen, require_chess

__all__ = ["BINS", "evaluate", "evaluate_through_env", "forward_legal", "quality_report"]

#: equal-width bins of the predicted P(win) for the reliability table and the ECE
BINS = 10


def _heads(agent: ActorValueOperator) -> tuple[Any, Any, Any]:
    """The raw trunk, move head and value head inside the operator of ``make_agent``."""
    trunk, policy, value = agent.module
    return trunk.module, policy.module[0].module, value.module


def forward_legal(
    agent: ActorValueOperator, planes: torch.Tensor, codes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Legal-move logits ``[B, 218]`` (padding at ``-inf``) and ``win_logits`` ``[B, 3]``."""
    trunk, move_head, value_head = _heads(agent)
    codes = codes.long()
    hidden = trunk(planes.float())
    logits = move_head.legal_logits(hidden, codes)
    logits = logits.masked_fill(codes == N_MOVE_CODES, float("-inf"))
    win_logits, _ = value_head(hidden)
    return logits, win_logits


@torch.no_grad()
def evaluate(
    agent: ActorValueOperator, data: dict[str, torch.Tensor], batch_size: int = 1024
) -> dict[str, Any]:
    """Move agreement and value calibration on encoded positions.

    Args:
        agent: the operator of :func:`~tdhook_rl.agents.chess.model.make_agent`.
        data: :func:`encode_positions`' tensors plus ``wdl`` (float ``[N, 3]``, summing to 1).
        batch_size: positions per forward pass.

    Returns:
        ``top1``, ``top3``, ``random_top1`` (the mean of ``1 / n_legal``), ``move_ce``,
        ``value_ce``, ``brier`` (three classes), ``brier_win`` and ``ece_win`` (of ``P(win)``),
        ``ece_score`` (of the expected score ``P(win) + P(draw) / 2``), ``value_accuracy``
        (the most likely outcome matches Stockfish's), ``brier_constant`` (predicting the
        mean label everywhere) and ``reliability`` (rows ``(low, high, count,
        mean predicted P(win), mean Stockfish P(win))``).
    """
    agent.eval()
    top1 = top3 = move_ce = value_ce = 0.0
    probs = []
    n = data["target"].shape[0]
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        logits, win_logits = forward_legal(agent, data["planes"][sl], data["codes"][sl])
        target = data["target"][sl]
        ranked = logits.topk(3, dim=-1).indices
        top1 += (ranked[:, 0] == target).sum().item()
        top3 += (ranked == target[:, None]).any(-1).sum().item()
        move_ce += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        log_p = win_logits.log_softmax(-1)
        value_ce += -(data["wdl"][sl] * log_p).sum().item()
        probs.append(log_p.exp())
    p = torch.cat(probs)
    y = data["wdl"]
    p_win, y_win = p[:, 0], y[:, 0]
    score, y_score = p[:, 0] + p[:, 1] / 2, y[:, 0] + y[:, 1] / 2
    reliability = []
    ece_win = 0.0
    for b in range(BINS):
        low, high = b / BINS, (b + 1) / BINS
        inside = (p_win >= low) & ((p_win < high) if b < BINS - 1 else (p_win <= high))
        count = int(inside.sum())
        if count:
            mean_p, mean_y = p_win[inside].mean().item(), y_win[inside].mean().item()
            ece_win += count / n * abs(mean_p - mean_y)
            reliability.append((low, high, count, mean_p, mean_y))
        else:
            reliability.append((low, high, 0, math.nan, math.nan))
    ece_score = 0.0
    for b in range(BINS):
        inside = (score >= b / BINS) & ((score < (b + 1) / BINS) | (b == BINS - 1))
        if inside.any():
            gap = (score[inside].mean() - y_score[inside].mean()).abs().item()
            ece_score += inside.sum().item() / n * gap
    return {
        "positions": n,
        "top1": top1 / n,
        "top3": top3 / n,
        "random_top1": (1.0 / data["n_legal"].double()).mean().item(),
        "move_ce": move_ce / n,
        "value_ce": value_ce / n,
        "brier": ((p - y) ** 2).sum(-1).mean().item(),
        "brier_constant": ((y.mean(0) - y) ** 2).sum(-1).mean().item(),
        "brier_win": ((p_win - y_win) ** 2).mean().item(),
        "ece_win": ece_win,
        "ece_score": ece_score,
        "value_accuracy": (p.argmax(-1) == y.argmax(-1)).double().mean().item(),
        "reliability": reliability,
    }


@torch.no_grad()
def evaluate_through_env(agent: ActorValueOperator, positions: list[dict[str, Any]]) -> float:
    """Top-1 agreement with Stockfish on ``positions`` (dicts with ``fen`` and ``best`` in
    UCI), played the TorchRL way: :func:`~tdhook_rl.envs.chess.encode_fen`, the actor's
    deterministic action, :func:`~tdhook_rl.envs.chess.action_to_move`."""
    chess = require_chess()
    td = torch.stack([encode_fen(p["fen"]) for p in positions])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        actions = agent(td)["action"]
    agree = 0
    for p, action in zip(positions, actions, strict=True):
        agree += action_to_move(chess.Board(p["fen"]), action).uci() == p["best"]
    return agree / len(positions)


def quality_report(
    meta: dict[str, Any], splits: tuple[int, int], result: dict[str, Any], log: list[dict]
) -> str:
    m, cfg = result["metrics"], result["config"]
    command = f"python -m tdhook_rl.agents.chess.train {result['argv']}".strip()
    lines = [
        "# Chess agent: measured quality",
        "",
        f"Written by `{command}` (seed {result['seed']}, {result['minutes']:.0f} min on "
        f"{result['threads']} CPU thread{'s' if result['threads'] > 1 else ''}).",
        "",
        "## Data",
        "",
        f"- {splits[0] + splits[1]} positions from {meta['games']} games "
        f"(`python -m tdhook_rl.agents.chess.data`, seed {meta['seed']}): random and "
        f"{meta['engine']} moves mixed, labelled by {meta['engine']} at depth {meta['depth']} "
        "(1 thread).",
        f"- Value labels: the score converted to W/D/L with Stockfish 15.1's win-rate model at "
        f'ply {meta["wdl_ply"]} (python-chess `wdl(model="{meta["wdl_model"]}")`); a steep '
        "model: +100 cp is 53% win, +150 cp 93%, 0 cp 99% draw.",
        f"- Held out: the {splits[1]} positions of games `g % {HELDOUT_EVERY} == 0` (whole "
        f"games); trained on the other {splits[0]}.",
        "",
        "## Model",
        "",
        f"- `{json.dumps(cfg)}`: {result['parameters']:,} parameters, checkpoint "
        f"{result['checkpoint_bytes'] / 1e6:.2f} MB (float32).",
        f"- {result['epochs']} epochs, batch {result['batch_size']}, AdamW with a one-cycle "
        f"learning rate peaking at {result['lr']}.",
        "",
        f"## Held-out positions ({m['positions']})",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| top-1 agreement with Stockfish's move | **{m['top1']:.3f}** |",
        f"| top-3 agreement | {m['top3']:.3f} |",
        f"| random legal move (mean of 1 / n_legal) | {m['random_top1']:.3f} |",
        f"| move cross-entropy (nats) | {m['move_ce']:.3f} |",
        f"| value cross-entropy vs Stockfish W/D/L (nats) | {m['value_ce']:.3f} |",
        f"| Brier score, W/D/L (3 classes) | {m['brier']:.3f} |",
        f"| Brier score, constant prediction (the mean label) | {m['brier_constant']:.3f} |",
        f"| Brier score, P(win) | {m['brier_win']:.3f} |",
        f"| ECE of P(win), {BINS} bins | {m['ece_win']:.3f} |",
        f"| ECE of the expected score P(win) + P(draw)/2 | {m['ece_score']:.3f} |",
        f"| most likely outcome = Stockfish's | {m['value_accuracy']:.3f} |",
        "",
        'Reliability of P(win) (the "observed" column is the mean of Stockfish\'s P(win) in '
        "the bin):",
        "",
        "| predicted P(win) | positions | mean predicted | observed (Stockfish) |",
        "| --- | --- | --- | --- |",
    ]
    for low, high, count, mean_p, mean_y in m["reliability"]:
        cells = f"{mean_p:.3f} | {mean_y:.3f}" if count else "- | -"
        lines.append(f"| [{low:.1f}, {high:.1f}) | {count} | {cells} |")
    lines += [
        "",
        f"The {result['shipped_count']} held-out positions shipped in `{result['shipped_file']}` "
        "(used by "
        "`tests/agents/test_chess_agent.py`), played through the TorchRL path "
        "(`encode_fen`, the actor's deterministic action, `action_to_move`): top-1 agreement "
        f"**{result['shipped_top1']:.2f}** (random legal move: "
        f"{result['shipped_random']:.3f}).",
        "",
        "## Training log (held-out metrics after each epoch)",
        "",
        "| epoch | train move CE | train value CE | top-1 | top-3 | move CE | value CE | ECE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in log:
        lines.append(
            f"| {r['epoch']} | {r['train_move_ce']:.3f} | {r['train_value_ce']:.3f} | "
            f"{r['top1']:.3f} | {r['top3']:.3f} | {r['move_ce']:.3f} | {r['value_ce']:.3f} | "
            f"{r['ece_win']:.3f} |"
        )
    return "\n".join(lines) + "\n"
