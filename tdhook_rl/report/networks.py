"""``tdhook-rl explain --network module:callable --checkpoint PATH``: explain a network of
your own architecture, built by your code and filled with your checkpoint's weights.

The callable is imported from ``module`` and called with no arguments (wrap one that needs
arguments in a function or ``functools.partial``); it returns the untrained network, which
must read and write the same entries as the shipped agent:

* ``double_pendulum``: an :class:`~torchrl.modules.ActorValueOperator` (a shared trunk,
  as ``agents/double_pendulum/train.py --arch shared`` trains; checkpoint entry
  ``"actor_critic"``), or a pair ``(actor, critic)`` (checkpoint entries ``"actor"`` and
  ``"critic"``). The checkpoint's ``"obs_norm"`` gives the observation statistics;
* ``chess`` and ``connect_four``: a TensorDict module (e.g. an
  :class:`~torchrl.modules.ActorValueOperator`) reading and writing the shipped agent's
  entries, with a probabilistic actor inside; the checkpoint holds ``{"state_dict": ...}``
  (as the training scripts write it) or is the state dict itself.

Every problem raises :class:`NetworkError` with a one-line message.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["NetworkError", "import_callable", "load_network"]


class NetworkError(ValueError):
    """A ``--network`` that cannot be imported, built or filled (a one-line message)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def import_callable(spec: str) -> Callable[[], Any]:
    """The callable named by ``"package.module:name"`` (``name`` may be dotted).

    Examples:
        >>> import_callable("tdhook_rl.agents.chess.model:make_agent").__name__
        'make_agent'
        >>> import_callable("tdhook_rl.agents.chess.model")
        Traceback (most recent call last):
        ...
        tdhook_rl.report.networks.NetworkError: --network expects module:callable (e.g. \
my_package.nets:build_actor_critic), got 'tdhook_rl.agents.chess.model'
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise NetworkError(
            "--network expects module:callable (e.g. my_package.nets:build_actor_critic), "
            f"got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or anything the module raises on import
        raise NetworkError(
            f"--network {spec}: cannot import {module_name!r} ({_first_line(err)})"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise NetworkError(f"--network {spec}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise NetworkError(
            f"--network {spec}: {attr!r} is a {type(target).__name__}, not a callable"
        )
    return target


def _state_dict(saved: Any, key: str, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(saved, Mapping) and key in saved:
        return saved[key]
    if isinstance(saved, Mapping) and saved and all(torch.is_tensor(v) for v in saved.values()):
        return saved  # a bare state dict
    held = sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__
    raise NetworkError(f"checkpoint {path} has no {key!r} entry (it holds {held})")


def _fill(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, spec: str) -> None:
    try:
        module.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except (RuntimeError, KeyError, ValueError) as err:
        raise NetworkError(
            f"checkpoint {path} does not match the network built by --network {spec}: "
            f"{_first_line(err)}"
        ) from None


def load_network(agent: str, spec: str, checkpoint: str | Path, device: str = "cpu") -> Any:
    """Builds the network ``spec`` names and loads ``checkpoint`` into it (see the module
    docstring for what each agent expects).

    Args:
        agent: ``"double_pendulum"``, ``"chess"`` or ``"connect_four"``.
        spec: ``"module:callable"``.
        checkpoint: the weights.
        device: where the network goes.

    Returns:
        what the agent's explainer reads: a
        :class:`~tdhook_rl.agents.double_pendulum.DoublePendulumAgent`, or the network.

    Raises:
        NetworkError: with a one-line message.

    Examples:
        >>> import tempfile, torch
        >>> from tdhook_rl.agents.connect_four import make_agent
        >>> path = tempfile.mkdtemp() + "/c4.pt"
        >>> torch.save({"state_dict": make_agent().state_dict()}, path)
        >>> net = load_network("connect_four", "tdhook_rl.agents.connect_four:make_agent", path)
        >>> type(net).__name__
        'ActorValueOperator'
    """
    from tensordict.nn import TensorDictModuleBase
    from torchrl.modules import ActorValueOperator

    build = import_callable(spec)
    try:
        network = build()
    except Exception as err:
        raise NetworkError(
            f"--network {spec}: calling it raised {type(err).__name__}: {_first_line(err)}"
        ) from None
    path = Path(checkpoint)
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise NetworkError(f"checkpoint {path} cannot be read: {_first_line(err)}") from None
    if agent == "double_pendulum":
        from tdhook_rl.agents.double_pendulum.model import DoublePendulumAgent

        if isinstance(network, ActorValueOperator):
            _fill(network, _state_dict(saved, "actor_critic", path), path, spec)
            actor, critic = network.get_policy_operator(), network.get_value_operator()
        elif (
            isinstance(network, tuple | list)
            and len(network) == 2
            and all(isinstance(m, TensorDictModuleBase) for m in network)
        ):
            actor, critic = network
            _fill(actor, _state_dict(saved, "actor", path), path, spec)
            _fill(critic, _state_dict(saved, "critic", path), path, spec)
        else:
            raise NetworkError(
                f"--network {spec} returned a {type(network).__name__}; for the double "
                "pendulum it must return an ActorValueOperator or a pair (actor, critic)"
            )
        if not isinstance(saved, Mapping) or "obs_norm" not in saved:
            raise NetworkError(
                f"checkpoint {path} has no 'obs_norm' entry (the observation statistics the "
                "agent was trained with; train.py writes it)"
            )
        norm = {k: v.to(device) if torch.is_tensor(v) else v for k, v in saved["obs_norm"].items()}
        return DoublePendulumAgent(actor.to(device).eval(), critic.to(device).eval(), norm)
    if not isinstance(network, TensorDictModuleBase):
        raise NetworkError(
            f"--network {spec} returned a {type(network).__name__}; for {agent} it must "
            "return a TensorDict module with the shipped agent's entries"
        )
    _fill(network, _state_dict(saved, "state_dict", path), path, spec)
    return network.to(device).eval()
