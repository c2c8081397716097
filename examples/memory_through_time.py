"""Attribution through time on a trained recurrent agent: which past observation does the
decision rest on?

The task (``CueRecall``, a batched TorchRL env in pure torch): step 0 shows a cue, a number in
``[-1, -0.2]`` or ``[0.2, 1]``; steps 1-7 show noise in the same feature; at step 7 (flagged
by the second feature) the agent is rewarded for choosing action 1 when the cue was positive,
0 otherwise. Only the cue tells the answer, so an agent that solves the task must carry it in
its LSTM memory for seven steps.

The script trains an LSTM policy (TorchRL's ``LSTMModule`` + ``ProbabilisticActor``) with
REINFORCE on the decision (about a second on a CPU core), evaluates it, then attributes the
logit margin ``logit[1] - logit[0]`` of every step to the observations of every step with
integrated gradients, on whole trajectories: ``Attributed(..., sample_dims=1)`` under
``set_recurrent_mode(True)``. The number of path points is doubled until IG's completeness
delta is below ``--max-delta`` on every trajectory and step: how steep the trained network is
depends on the run. ``viz.memory_map`` draws the mean |attribution| over the
evaluation trajectories: the decision row is carried by the cue at step 0.

Saliency would show almost nothing here: the trained policy is confident, its gradient at the
input is ~0 (saturation), which is why integrated gradients are used.

Run: ``python examples/memory_through_time.py`` (writes ``memory_map.png`` and
``memory_through_time.json`` into ``--out``, default ``./memory-through-time``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase, InitTracker, TransformedEnv
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type
from torchrl.modules import LSTMModule, ProbabilisticActor, set_recurrent_mode

import tdhook_rl as thr
from tdhook_rl import viz
from tdhook_rl.attribution import IntegratedGradients

STEPS = 8  # the decision is taken at the last one


class CueRecall(EnvBase):
    """``observation = [signal, decide]``: the cue at step 0, noise after; ``decide`` is 1 at
    the last step, where the reward is 1 for the action that matches the cue's sign."""

    def __init__(self, copies: int = 256, seed: int = 0) -> None:
        super().__init__(batch_size=[copies])
        shape = (copies,)
        self.observation_spec = Composite(observation=Unbounded((*shape, 2)), shape=shape)
        self.action_spec = Categorical(2, shape=shape)
        self.reward_spec = Unbounded((*shape, 1))
        self.rng = torch.Generator().manual_seed(seed)
        self.cue = torch.zeros(shape)
        self.step_count = 0

    def _observation(self) -> torch.Tensor:
        n = self.batch_size[0]
        signal = self.cue if self.step_count == 0 else torch.rand(n, generator=self.rng) - 0.5
        decide = torch.full((n,), float(self.step_count == STEPS - 1))
        return torch.stack([signal, decide], -1)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDict:
        n = self.batch_size[0]
        sign = torch.randint(0, 2, (n,), generator=self.rng).float() * 2 - 1
        self.cue = sign * (0.2 + 0.8 * torch.rand(n, generator=self.rng))
        self.step_count = 0
        done = torch.zeros(n, 1, dtype=torch.bool)
        return TensorDict(observation=self._observation(), done=done, batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        decision = self.step_count == STEPS - 1
        right = (tensordict["action"] == (self.cue > 0).long()).float()
        reward = (right if decision else torch.zeros_like(right)).unsqueeze(-1)
        self.step_count += 1
        done = torch.full((self.batch_size[0], 1), decision)
        return TensorDict(
            observation=self._observation(),
            reward=reward,
            done=done,
            terminated=done.clone(),
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None) -> None:
        self.rng = torch.Generator().manual_seed(seed or 0)


def make(copies: int, seed: int) -> tuple[TransformedEnv, ProbabilisticActor]:
    torch.manual_seed(seed)
    memory = LSTMModule(input_size=2, hidden_size=16, in_key="observation", out_key="embed")
    env = TransformedEnv(CueRecall(copies, seed), InitTracker())
    env.append_transform(memory.make_tensordict_primer())
    head = TensorDictModule(nn.Linear(16, 2), ["embed"], ["logits"])
    policy = ProbabilisticActor(
        TensorDictSequential(memory, head),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        spec=Categorical(2),
        return_log_prob=True,
    )
    return env, policy


def train(env: TransformedEnv, policy: ProbabilisticActor, iterations: int) -> int:
    """REINFORCE on the decision (the only rewarded action); returns the iterations run."""
    optim = torch.optim.Adam(policy.parameters(), lr=1e-2)
    memory_keys = ("observation", "is_init", "recurrent_state_h", "recurrent_state_c")
    for it in range(iterations):
        with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
            rollout = env.rollout(STEPS, policy)  # [copies, STEPS], step by step
        reward = rollout["next", "reward"][:, -1, 0]
        if reward.mean() >= 0.99:
            return it
        with set_recurrent_mode(True):  # the whole trajectories again, with gradients
            logits = policy(rollout.select(*memory_keys).clone())["logits"][:, -1]
        log_prob = torch.distributions.Categorical(logits=logits).log_prob(rollout["action"][:, -1])
        loss = -((reward - reward.mean()) * log_prob).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    return iterations


def margin(step: int):
    """The evidence for action 1 over action 0 at ``step`` of each trajectory."""

    def target(td: TensorDictBase) -> torch.Tensor:
        return td["logits"][:, step, 1] - td["logits"][:, step, 0]

    target.__name__ = f"margin_step_{step}"
    return target


def attribute_until_complete(
    policy: ProbabilisticActor,
    rollout: TensorDictBase,
    heads: list[str],
    n_steps: int,
    max_delta: float,
    max_n_steps: int,
) -> tuple[TensorDictBase, int, float]:
    """IG of every step's margin through time, with the path points doubled until the
    completeness delta of every target on every trajectory is at most ``max_delta`` (or
    ``max_n_steps`` is passed). Returns the attributed rollout, the steps used and the delta."""
    while True:
        explained = thr.Attributed(
            policy,
            IntegratedGradients(n_steps=n_steps, chunk_size=256),  # memory bounded
            inputs=["observation"],
            targets={h: margin(t) for t, h in enumerate(heads)},
            sample_dims=1,  # one sample = one whole trajectory
        )
        with set_recurrent_mode(True), set_exploration_type(ExplorationType.DETERMINISTIC):
            out = explained(rollout.clone())
        delta = max(float(out["attribution", h, "completeness_delta"].abs().max()) for h in heads)
        if delta <= max_delta or 2 * n_steps > max_n_steps:
            return out, n_steps, delta
        n_steps *= 2


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300, help="REINFORCE iterations (max)")
    parser.add_argument("--copies", type=int, default=256, help="episodes per iteration")
    # the trained LSTM's response to the cue is steep, and how steep depends on the run (the
    # trained weights differ from one CPU's floating-point path to another's): the number of
    # path points is doubled from --n-steps until IG's completeness delta is below --max-delta
    parser.add_argument("--n-steps", type=int, default=256, help="first integrated-gradients steps")
    parser.add_argument(
        "--max-delta",
        type=float,
        default=0.05,
        help="largest |completeness delta| accepted (logit units), on every trajectory and step",
    )
    parser.add_argument(
        "--max-n-steps", type=int, default=8192, help="give up doubling past this many steps"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("memory-through-time"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    env, policy = make(args.copies, args.seed)
    check_env_specs(env)
    iterations = train(env, policy, args.iterations)

    policy.eval()
    env.set_seed(args.seed + 1)  # fresh evaluation episodes
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(STEPS, policy)
    accuracy = float(rollout["next", "reward"][:, -1].mean())

    heads = [f"step {t}" for t in range(STEPS)]
    out, n_steps, delta = attribute_until_complete(
        policy, rollout, heads, args.n_steps, args.max_delta, args.max_n_steps
    )
    # the decision row: mean over trajectories of |attribution| summed over the features
    decision = out["attribution", heads[-1], "observation"].sum(-1).abs().mean(0)
    args.out.mkdir(parents=True, exist_ok=True)
    fig = viz.memory_map(
        out, heads, title="Logit margin of each step, attributed to every step (mean |IG|)"
    )
    fig.savefig(args.out / "memory_map.png")
    summary = {
        "training_iterations": iterations,
        "accuracy": accuracy,
        "decision_attribution_by_step": decision.tolist(),
        "decision_share_of_step_0": float(decision[0] / decision.sum()),
        "ig_n_steps": n_steps,
        "max_abs_completeness_delta": delta,
        "max_delta_bound": args.max_delta,
        "converged": delta <= args.max_delta,
        "wall_seconds": time.perf_counter() - start,
    }
    (args.out / "memory_through_time.json").write_text(json.dumps(summary, indent=1))
    print(
        f"accuracy {accuracy:.2f} after {iterations} iterations; the decision's attribution "
        f"rests {100 * summary['decision_share_of_step_0']:.0f}% on step 0 (the cue); "
        f"IG-{n_steps}, max |completeness delta| {delta:.3f} (bound {args.max_delta}); wrote "
        f"{args.out / 'memory_map.png'}"
    )
    return summary


if __name__ == "__main__":
    main()
