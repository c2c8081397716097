"""Attribute both heads of an actor-critic on MuJoCo's InvertedDoublePendulum-v5.

Rolls out a (randomly initialized, seeded) shared-trunk actor-critic with ``env.rollout``
through ``tdhook_rl.Attributed``: the policy head (log-probability of the action taken) and
the value head (``state_value``) are attributed to the 9 observation features with
integrated gradients, in one batched pass per step. Prints a per-feature summary.

Run:  python examples/attribute_double_pendulum.py [--steps 200] [--n-steps 32]
"""

from __future__ import annotations

import argparse

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
from torchrl.modules import ActorValueOperator, ProbabilisticActor, TanhNormal, ValueOperator

import tdhook_rl as thr
from tdhook_rl.attribution import IntegratedGradients
from tdhook_rl.targets import ActionLogProb

# Gymnasium's InvertedDoublePendulum-v5 observation, in order
FEATURES = [
    "cart x",
    "sin(hinge 1)",
    "sin(hinge 2)",
    "cos(hinge 1)",
    "cos(hinge 2)",
    "cart vel",
    "hinge 1 ang. vel",
    "hinge 2 ang. vel",
    "constraint force",
]


def make_actor_critic(
    obs_dim: int = 9, action_dim: int = 1, hidden: int = 64
) -> ActorValueOperator:
    trunk = TensorDictModule(
        nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()),
        in_keys=["observation"],
        out_keys=["hidden"],
    )
    policy = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(nn.Linear(hidden, 2 * action_dim), NormalParamExtractor()),
            in_keys=["hidden"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
    )
    value = ValueOperator(nn.Linear(hidden, 1), in_keys=["hidden"])
    return ActorValueOperator(trunk, policy, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="environment steps to roll out")
    parser.add_argument("--n-steps", type=int, default=32, help="integrated-gradients steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    env = TransformedEnv(GymEnv("InvertedDoublePendulum-v5"), DoubleToFloat())
    env.set_seed(args.seed)
    explained = thr.Attributed(
        make_actor_critic(),
        IntegratedGradients(n_steps=args.n_steps),
        inputs=["observation"],
        targets={"policy": ActionLogProb(), "value": "state_value"},
    )
    with torch.no_grad():  # as a collector runs it; gradients are enabled locally
        rollout = env.rollout(args.steps, explained, break_when_any_done=False)
    env.close()

    steps = rollout.numel()
    episodes = int(rollout["next", "done"].sum())
    print(f"rolled out {steps} steps ({episodes} episode ends) with attribution of both heads")
    print(f"{'feature':<18} {'policy |IG| share':>18} {'value |IG| share':>17}")
    shares = {}
    for head in ("policy", "value"):
        a = rollout["attribution", head, "observation"].abs().mean(0)
        shares[head] = a / a.sum()
    for i, name in enumerate(FEATURES):
        print(f"{name:<18} {shares['policy'][i]:>18.1%} {shares['value'][i]:>17.1%}")
    for head in ("policy", "value"):
        delta = rollout["attribution", head, "completeness_delta"].abs().max()
        print(f"{head}: max |completeness delta| = {delta:.2e}")


if __name__ == "__main__":
    main()
