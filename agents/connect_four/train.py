"""Self-play PPO for the Connect Four agent, and its evaluation against scripted players.

One shared network plays both sides of thousands of batched games
(:class:`~tdhook_rl.envs.connect_four.ConnectFourEnv`). Rewards go to the player who just
moved, and the value is that of the player to move, so returns alternate in sign from one
ply to the next ("negamax"): the target of ply ``t`` is the outcome if the game ends there,
else the *flipped* (win <-> loss) target of ply ``t + 1``, mixed TD(lambda)-style with the
flipped prediction for the next position. The targets are distributions over (win, draw,
loss) and train ``win_logits`` by cross-entropy, undiscounted: the head predicts the outcome
of the game. The policy's advantage is the same negamax TD(lambda) return, but of the scalar
outcome and discounted (``gamma`` per ply), minus ``state_value``: without a discount a win
now and a forced win later are worth the same, and the policy learns to dawdle (and so to
miss wins against opponents that do not let a second chance happen). TorchRL's GAE is not
used: a negative discount breaks its vectorized form (it takes ``log(gamma * lmbda)``), and
TorchRL's ``ClipPPOLoss`` would run the shared trunk twice (once for the actor, once for the
critic); the clipped objective is written out here on a single forward pass instead.

Some games pit the network against a scripted player, one seat each: the one-ply greedy
player (``--greedy-fraction``, :func:`~tdhook_rl.envs.connect_four.greedy_action`) teaches
tactics early, the random player (``--random-fraction``) shows positions self-play never
reaches. The scripted moves train the value head but not the policy.

Why not pure self-play: with the same budget and seed, ``--greedy-fraction 0
--random-fraction 0`` (200 rounds, 14.1 minutes on one CPU thread) gave 97.0% wins against
the random player but only 35.4% against the greedy one (63.0% losses; 500 games each):
self-play alone does not find the one-move tactics in this budget (it took 43.7% of the
immediate wins on offer against greedy and made 46.2% of the needed blocks). The shipped
mix reaches 99.4% and 84.2% (``QUALITY.md``).

Run (20 to 45 minutes on one busy CPU thread; ``--device cuda`` for a GPU)::

    python -m tdhook_rl.agents.connect_four.train

It writes ``checkpoint.pt`` and ``QUALITY.md`` (measured by :mod:`.evaluate`) next to this
file (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tensordict import NestedKey, TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ActorValueOperator
from tqdm import tqdm

from tdhook_rl.agents.connect_four.evaluate import evaluate, quality_report
from tdhook_rl.agents.connect_four.model import DEFAULT_CONFIG, load, make_agent
from tdhook_rl.envs.connect_four import ConnectFourEnv, greedy_action, random_action

__all__ = ["main", "negamax_returns", "outcome_targets", "save", "train"]

HERE = Path(__file__).parent
_FLIP = [2, 1, 0]  # (win, draw, loss) of one player -> of the other


def negamax_returns(
    values: torch.Tensor,
    bootstrap: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lmbda: float,
) -> torch.Tensor:
    """Discounted negamax TD(lambda) returns of the player to move at each ply, time last.

    ``G_t = r_t`` if ply ``t`` ends the game, else
    ``-gamma * ((1 - lmbda) * V(s_{t+1}) + lmbda * G_{t+1})``: the next position belongs to
    the opponent, hence the sign.

    Args:
        values: ``[..., T]``, the value of each ply's position for the player to move.
        bootstrap: ``[...]``, the value of the position after the last ply.
        reward: ``[..., T]``, to the player who moved; done: ``[..., T]`` bool.
        gamma: the discount per ply; lmbda: the TD(lambda) mixing.

    Returns:
        ``[..., T]``.

    Examples:
        >>> values = torch.zeros(1, 3)
        >>> done = torch.tensor([[False, False, True]])
        >>> reward = torch.tensor([[0.0, 0.0, 1.0]])   # the third ply wins
        >>> negamax_returns(values, values[:, 0], reward, done, gamma=0.5, lmbda=1.0)
        tensor([[ 0.2500, -0.5000,  1.0000]])
    """
    returns = torch.empty_like(values)
    following = -gamma * bootstrap
    for t in reversed(range(values.shape[-1])):
        g = torch.where(done[..., t], reward[..., t], following)
        returns[..., t] = g
        following = -gamma * ((1 - lmbda) * values[..., t] + lmbda * g)
    return returns


def outcome_targets(
    win_probs: torch.Tensor,
    bootstrap: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    lmbda: float,
) -> torch.Tensor:
    """Negamax TD(lambda) targets over (win, draw, loss) for each ply, time last.

    Args:
        win_probs: ``[..., T, 3]``, the predicted outcome for the player to move at each ply.
        bootstrap: ``[..., 3]``, the prediction for the position after the last ply.
        reward: ``[..., T]``, to the player who moved (``+1`` win, ``-1`` illegal move).
        done: ``[..., T]`` bool, the ply ended the game.
        lmbda: the TD(lambda) mixing (``1``: the outcome of the game, bootstrapped only at
            the end of the window).

    Returns:
        ``[..., T, 3]``, the target distribution for the player to move at each ply.

    Examples:
        >>> probs = torch.full((1, 2, 3), 1 / 3)
        >>> done = torch.tensor([[False, True]])
        >>> reward = torch.tensor([[0.0, 1.0]])   # the second ply wins
        >>> outcome_targets(probs, probs[:, 0], reward, done, lmbda=1.0)
        tensor([[[0., 0., 1.],
                 [1., 0., 0.]]])
    """
    outcome = torch.stack([reward > 0, reward == 0, reward < 0], -1).to(win_probs.dtype)
    targets = torch.empty_like(win_probs)
    following = bootstrap[..., _FLIP]
    for t in reversed(range(win_probs.shape[-2])):
        target = torch.where(done[..., t, None], outcome[..., t, :], following)
        targets[..., t, :] = target
        following = ((1 - lmbda) * win_probs[..., t, :] + lmbda * target)[..., _FLIP]
    return targets


def _collect(
    agent: ActorValueOperator,
    env: ConnectFourEnv,
    td: TensorDictBase,
    horizon: int,
    opponents: torch.Tensor,
    agent_seat: torch.Tensor,
) -> tuple[TensorDictBase, torch.Tensor, TensorDictBase]:
    """``horizon`` plies of every game: the batch ``[N, T]``, the predicted outcome ``[N, 3]``
    of the positions reached, and the root to go on from."""
    keys: list[NestedKey] = ["observation", "action_mask", "action", "action_log_prob"]
    keys += ["win_logits"]
    keys += ["state_value", "learn", ("next", "reward"), ("next", "done")]
    plies = []
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        for _ in range(horizon):
            td = agent(td)
            # opponents: 0 self-play, 1 greedy, 2 random (a fixed seat in each scripted game)
            scripted_turn = td["player"].squeeze(-1) != agent_seat
            greedy = greedy_action(td["board"], td["player"], td["action_mask"])
            uniform = random_action(td["action_mask"])
            action = torch.where(opponents == 1, greedy, uniform)
            opponent = (opponents > 0) & scripted_turn
            td["action"] = torch.where(opponent, action, td["action"])
            td["learn"] = ~opponent
            step, td = env.step_and_maybe_reset(td)
            plies.append(step.select(*keys))
        bootstrap = agent.get_value_operator()(td.select("observation"))["win_logits"]
    return torch.stack(plies, dim=1), bootstrap.softmax(-1), td


def _ppo_step(
    agent: ActorValueOperator,
    batch: TensorDictBase,
    optimizer: torch.optim.Optimizer,
    clip: float,
    entropy_coeff: float,
    value_coeff: float,
) -> dict[str, torch.Tensor]:
    """One gradient step of the clipped objective plus the win-head cross-entropy."""
    trunk, policy_head, value_head = agent.module
    td = value_head(trunk(batch.select("observation", "action_mask").clone(False)))
    dist = policy_head.get_dist(td)
    log_ratio = dist.log_prob(batch["action"]) - batch["action_log_prob"]
    ratio = log_ratio.exp()
    advantage = batch["advantage"]
    gain = torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    learn = batch["learn"].float()
    n_learn = learn.sum().clamp_min(1.0)
    loss_policy = -(gain * learn).sum() / n_learn
    entropy = (dist.entropy() * learn).sum() / n_learn
    log_probs = td["win_logits"].log_softmax(-1)
    loss_value = -(batch["target"] * log_probs).sum(-1).mean()
    loss = loss_policy - entropy_coeff * entropy + value_coeff * loss_value
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(agent.parameters(), 1.0)
    optimizer.step()
    return {"policy": loss_policy.detach(), "value": loss_value.detach(), "entropy": entropy}


def train(
    *,
    iterations: int = 200,
    envs: int = 1024,
    horizon: int = 32,
    epochs: int = 4,
    minibatch: int = 2048,
    lr: float = 5e-4,
    clip: float = 0.2,
    lmbda: float = 0.9,
    gamma: float = 0.97,
    entropy_coeff: float = 0.01,
    value_coeff: float = 1.0,
    greedy_fraction: float = 0.25,
    random_fraction: float = 0.125,
    eval_every: int = 25,
    max_minutes: float | None = None,
    save_every: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: Path | str = HERE,
) -> tuple[ActorValueOperator, dict]:
    """Trains the agent by self-play PPO (see the module documentation).

    Args:
        iterations: collect-then-update rounds.
        envs: games played at once (a batched env).
        horizon: plies per game per round (``envs * horizon`` frames a round).
        epochs, minibatch, lr, clip, entropy_coeff: PPO's usual knobs; the learning rate
            decays linearly to a tenth of ``lr`` over the rounds.
        lmbda: TD(lambda) mixing of the outcome targets and of the returns.
        gamma: discount per ply of the policy's returns (the win head is undiscounted).
        value_coeff: weight of the win-head cross-entropy.
        greedy_fraction, random_fraction: shares of the games played against the one-ply
            greedy player and the random player.
        eval_every: rounds between evaluations against the greedy player (200 games) shown in
            the progress bar; the checkpoint is written at each one.
        max_minutes: stop early after this wall time (the rounds done are reported).
        save_every: also write ``checkpoints/round_NNNN.pt`` under ``out`` every this many
            rounds and at round 0 (the initialization), for probes across training
            (:func:`tdhook_rl.concepts.across.probe_across`); ``0``: none.
        seed: seeds the network, the sampling and the scripted player.
        device: ``"cpu"``, ``"cuda"``, ...
        out: the folder for ``checkpoint.pt``.

    Returns:
        the trained agent and a summary dict (rounds, frames, minutes, settings).

    Examples:
        >>> import tempfile
        >>> agent, summary = train(iterations=1, envs=8, horizon=4, eval_every=0,
        ...                        out=tempfile.mkdtemp())
        >>> summary["frames"]
        32
    """
    settings = {k: v for k, v in locals().items() if k not in ("device", "out")}
    torch.manual_seed(seed)
    device = torch.device(device)
    out = Path(out)
    agent = make_agent(DEFAULT_CONFIG, device=device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.1, total_iters=iterations)
    env = ConnectFourEnv(batch_size=[envs], device=device)
    env.set_seed(seed)
    slot = torch.arange(envs, device=device)
    n_greedy, n_random = round(greedy_fraction * envs), round(random_fraction * envs)
    opponents = (slot < n_greedy).long() + 2 * ((slot >= n_greedy) & (slot < n_greedy + n_random))
    agent_seat = torch.arange(envs, device=device) % 2
    td = env.reset()
    start = time.monotonic()
    rounds = 0
    bar = tqdm(range(iterations), desc="connect four self-play", mininterval=5.0)
    if save_every:
        save(agent, out / "checkpoints" / "round_0000.pt", {**settings, "rounds": 0})
    for it in bar:
        batch, bootstrap, td = _collect(agent, env, td, horizon, opponents, agent_seat)
        reward = batch["next", "reward"].squeeze(-1)
        done = batch["next", "done"].squeeze(-1)
        batch["target"] = outcome_targets(
            batch["win_logits"].softmax(-1), bootstrap, reward, done, lmbda
        )
        value = batch["state_value"].squeeze(-1)
        returns = negamax_returns(
            value, bootstrap[..., 0] - bootstrap[..., 2], reward, done, gamma, lmbda
        )
        advantage = returns - value
        learn = batch["learn"]
        mean, std = advantage[learn].mean(), advantage[learn].std().clamp_min(1e-6)
        batch["advantage"] = (advantage - mean) / std
        flat = batch.exclude("next", "win_logits").reshape(-1)
        for _ in range(epochs):
            for idx in torch.randperm(flat.numel(), device=device).split(minibatch):
                logs = _ppo_step(agent, flat[idx], optimizer, clip, entropy_coeff, value_coeff)
        schedule.step()
        rounds = it + 1
        if save_every and rounds % save_every == 0:
            name = f"round_{rounds:04d}.pt"
            save(agent, out / "checkpoints" / name, {**settings, "rounds": rounds})
        if eval_every and (rounds % eval_every == 0 or rounds == iterations):
            rates = evaluate(agent, "greedy", games=200, seed=it, device=device)
            bar.set_postfix(
                vs_greedy=f"{rates['win']:.2f}/{rates['draw']:.2f}/{rates['loss']:.2f}",
                value=f"{logs['value'].item():.3f}",
                entropy=f"{logs['entropy'].item():.2f}",
            )
            save(agent, out / "checkpoint.pt", {**settings, "rounds": rounds})
        if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
            break
    summary = {
        **settings,
        "rounds": rounds,
        "frames": rounds * envs * horizon,
        "minutes": (time.monotonic() - start) / 60,
        "device": str(device),
    }
    save(agent, out / "checkpoint.pt", summary)
    return agent, summary


def save(agent: ActorValueOperator, path: Path, meta: dict) -> None:
    """Writes the agent's weights, network config and ``meta`` (what :func:`load` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in agent.state_dict().items()}
    torch.save({"config": DEFAULT_CONFIG, "state_dict": state, "meta": meta}, path)


def main(argv: list[str] | None = None) -> None:
    """The command line: trains, then measures the agent and writes ``QUALITY.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--envs", type=int, default=1024)
    parser.add_argument("--horizon", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--gamma", type=float, default=0.97)
    parser.add_argument("--greedy-fraction", type=float, default=0.25)
    parser.add_argument("--random-fraction", type=float, default=0.125)
    parser.add_argument(
        "--max-minutes", type=float, default=45.0, help="stop early (a slow machine)"
    )
    parser.add_argument(
        "--save-every", type=int, default=0, help="also keep a checkpoint every N rounds"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--games", type=int, default=500, help="evaluation games per opponent")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    _, summary = train(
        iterations=args.iterations,
        envs=args.envs,
        horizon=args.horizon,
        epochs=args.epochs,
        lr=args.lr,
        gamma=args.gamma,
        greedy_fraction=args.greedy_fraction,
        random_fraction=args.random_fraction,
        max_minutes=args.max_minutes,
        save_every=args.save_every,
        seed=args.seed,
        device=args.device,
        out=args.out,
    )
    agent = load(args.device, checkpoint=args.out / "checkpoint.pt")
    report = quality_report(agent, summary, args.games, args.device)
    (args.out / "QUALITY.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
