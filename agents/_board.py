"""What the board-game agents (chess, Connect Four) share: the win/draw/loss value, the
masked-policy actor-critic they are packaged as, and loading a trained one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Categorical
from torchrl.modules import ActorValueOperator, MaskedCategorical, ProbabilisticActor

from tdhook_rl.agents._checkpoint import read_checkpoint

__all__ = ["OUTCOMES", "expected_outcome", "load_trained", "masked_actor_critic"]

#: the columns of ``win_logits``, from the point of view of the player to move
OUTCOMES = ("win", "draw", "loss")


def expected_outcome(win_logits: torch.Tensor) -> torch.Tensor:
    """``P(win) - P(loss)`` (``[..., 1]``, in ``[-1, 1]``) from ``win_logits`` ``[..., 3]``.

    Examples:
        >>> expected_outcome(torch.tensor([[0.0, -1e9, -1e9], [0.0, 0.0, 0.0]]))
        tensor([[1.],
                [0.]])
    """
    probs = win_logits.softmax(-1)
    return probs[..., :1] - probs[..., 2:]


def masked_actor_critic(
    trunk: nn.Module,
    move_head: nn.Module,
    move_in_keys: Sequence[str],
    n_actions: int,
    value_head: nn.Module,
    device: torch.device | str = "cpu",
) -> ActorValueOperator:
    """TorchRL's shared-trunk actor-critic over a board: ``trunk`` reads ``observation`` and
    writes ``hidden``; ``move_head`` reads ``move_in_keys`` and writes ``logits``, from which a
    :class:`~torchrl.modules.ProbabilisticActor` samples ``action`` (with its
    ``action_log_prob``) from a :class:`~torchrl.modules.MaskedCategorical` over ``logits`` and
    ``action_mask``; ``value_head`` reads ``hidden`` and writes ``win_logits`` and
    ``state_value``.

    Examples:
        >>> class Value(nn.Module):
        ...     def forward(self, hidden):
        ...         return hidden[..., :3], expected_outcome(hidden[..., :3])
        >>> agent = masked_actor_critic(nn.Identity(), nn.Identity(), ["hidden"], 4, Value())
        >>> from tensordict import TensorDict
        >>> td = TensorDict(
        ...     observation=torch.tensor([5.0, 0.0, 1.0, 2.0]),
        ...     action_mask=torch.tensor([False, True, True, True]),
        ... )
        >>> int(agent(td)["action"]), tuple(td["state_value"].shape)
        (3, (1,))
    """
    policy = ProbabilisticActor(
        TensorDictModule(move_head, list(move_in_keys), ["logits"]),
        in_keys={"logits": "logits", "mask": "action_mask"},
        out_keys=["action"],
        spec=Categorical(n_actions),
        distribution_class=MaskedCategorical,
        return_log_prob=True,
    )
    return ActorValueOperator(
        TensorDictModule(trunk, ["observation"], ["hidden"]),
        policy,
        TensorDictModule(value_head, ["hidden"], ["win_logits", "state_value"]),
    ).to(device)


def load_trained(
    make_agent: Callable[..., ActorValueOperator],
    checkpoint: Path,
    device: torch.device | str,
    how_to_train: str,
) -> Any:
    """``make_agent(saved config)`` with the weights of ``checkpoint`` (stored in any
    floating dtype, loaded as float32), in eval mode; ``how_to_train`` names the command that
    writes one, for the error when it is missing."""
    saved = read_checkpoint(checkpoint, device, how_to_train)
    agent = make_agent(saved["config"], device=device)
    state = {k: v.float() if v.is_floating_point() else v for k, v in saved["state_dict"].items()}
    agent.load_state_dict(state)
    return agent.eval()
