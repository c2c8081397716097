"""The Q-value a value-based actor gives the action actually taken (:class:`ActionValue`)."""

from __future__ import annotations

import torch
from tensordict import NestedKey, TensorDictBase
from torch import nn

from tdhook_rl.core.keys import as_key, read
from tdhook_rl.targets._base import ModuleTarget, Target, as_index, index_text, select


class ActionValue(ModuleTarget):
    """The value a value-based actor gives the action actually taken: ``action_value`` at the
    taken action (a DQN's Q(s, a) of the rollout's action).

    TorchRL's :class:`~torchrl.modules.QValueActor` also writes ``chosen_action_value``, the
    value of the *greedy* action: that is what ``"chosen_action_value"`` as a target explains,
    and it is another number where exploration (``EGreedyModule``) took another action. This
    target reads the taken action from the original forward and picks its entry of
    ``action_value`` in the attribution pass, so along an integration path the explained
    action stays the same even where the greedy one changes.

    Args:
        value_key: the per-action values, ``[*batch, n_actions]``; by default the
            ``action_value`` key of the module's only ``QValueModule``, else
            ``"action_value"``.
        action_key: the taken action, one-hot ``[*batch, n_actions]`` or an index
            ``[*batch]``; by default the QValueModule's action key, else ``"action"``.
        index: the step (or other inner position) to read when each sample holds several,
            e.g. step ``t`` of whole trajectories (``Attributed(..., sample_dims=1)``):
            ``action_value[..., t, :]`` at ``action[..., t]``.

    Examples:
        >>> import tdhook_rl as thr
        >>> from tensordict import TensorDict
        >>> from torchrl.data import OneHot
        >>> from torchrl.modules import MLP, QValueActor
        >>> actor = QValueActor(MLP(in_features=3, out_features=4, num_cells=[16]),
        ...                     in_keys=["observation"], spec=OneHot(4))
        >>> explained = thr.Attributed(actor, "saliency", inputs=["observation"],
        ...                            targets={"q": ActionValue()})
        >>> td = explained(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> td["attribution", "q", "observation"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        value_key: NestedKey | None = None,
        action_key: NestedKey | None = None,
        *,
        index: int | tuple[int, ...] | None = None,
    ) -> None:
        self.value_key = None if value_key is None else as_key(value_key, "value_key")
        self.action_key = None if action_key is None else as_key(action_key, "action_key")
        self.index = None if index is None else as_index(index, "ActionValue(index=...)")

    def bind(self, module: nn.Module) -> Target:
        from torchrl.modules.tensordict_module.actors import QValueModule

        q_modules = [m for m in module.modules() if isinstance(m, QValueModule)]
        value_key, action_key = self.value_key, self.action_key
        if len(q_modules) == 1:
            q = q_modules[0]
            value_key = value_key if value_key is not None else q.action_value_key
            action_key = action_key if action_key is not None else q.out_keys[0]
        return _BoundActionValue(
            "action_value" if value_key is None else value_key,
            "action" if action_key is None else action_key,
            self.index,
        )

    def __repr__(self) -> str:
        return _repr(self.value_key, self.action_key, self.index)


def _repr(value_key: NestedKey | None, action_key: NestedKey | None, index: tuple | None) -> str:
    args = [] if value_key is None else [repr(value_key), repr(action_key)]
    if index is not None:
        args.append(f"index={index_text(index)}")
    return f"ActionValue({', '.join(args)})"


class _BoundActionValue(Target):
    def __init__(
        self, value_key: NestedKey, action_key: NestedKey, index: tuple[int, ...] | None
    ) -> None:
        self.value_key = value_key
        self.action_key = action_key
        self.index = index
        self.reference_keys = (action_key,)

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        who = self.who
        values = read(output, self.value_key, who)
        action = read(reference, self.action_key, who)
        batch = output.batch_size
        if self.index is not None:  # one step of each sample, e.g. of a whole trajectory
            values = select(values, len(batch), self.index, f"{who} ({self.value_key!r})")
            action = select(action, len(batch), self.index, f"{who} ({self.action_key!r})")
        if values.ndim != len(batch) + 1 or values.shape[:-1] != batch:
            raise ValueError(
                f"{who} needs {self.value_key!r} to hold one value per action, "
                f"[*batch, n_actions]; got shape {tuple(values.shape)} for batch {tuple(batch)}."
            )
        if action.shape == values.shape:  # one-hot
            one_hot = action.to(values.dtype)
            if not bool((one_hot.sum(-1) == 1).all()):
                raise ValueError(
                    f"{who}: {self.action_key!r} has the shape of {self.value_key!r} but is not "
                    "one-hot (exactly one 1 per sample); multi-discrete actions are not supported."
                )
            return (values * one_hot).sum(-1)
        if action.shape in (batch, (*batch, 1)) and not action.is_floating_point():
            index = action.reshape(*batch, 1).long()
            n = values.shape[-1]
            if bool(((index < 0) | (index >= n)).any()):
                raise IndexError(f"{who}: an action index is outside [0, {n}).")
            return values.gather(-1, index).squeeze(-1)
        raise ValueError(
            f"{who}: {self.action_key!r} has shape {tuple(action.shape)} and dtype "
            f"{action.dtype}; expected a one-hot {tuple(values.shape)} or integer indices "
            f"{tuple(batch)}."
        )

    def __repr__(self) -> str:
        return _repr(self.value_key, self.action_key, self.index)
