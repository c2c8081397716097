"""Structured perturbations of boards: a feature group is a square, and removing it takes the
piece off that square (the board stays a board) instead of zeroing entries of the encoding.

Zeroing a square's planes of a chess encoding leaves a position with castling rights for a
rook that is gone, and a legal-move mask that still offers the removed piece's moves;
emptying a Connect Four cell in the middle of a column leaves a floating disc. The game
knows what "the square emptied" means: a :class:`BoardPerturbation` (given by the
environment layer: ``tdhook_rl.envs.chess_perturbation.ChessSquares`` and
``tdhook_rl.envs.connect_four_perturbation.ConnectFourCells``) builds the perturbed board *and every
entry derived from it* (the legal-move mask, the legal-move lists), and :class:`Structured`
runs any coalition method (:class:`~tdhook_rl.attribution.FeatureAblation`,
:class:`~tdhook_rl.attribution.SARFA`, the Shapley methods, KernelSHAP, LIME) with it as the
"missing feature" model: all perturbed boards and masks are built up front, then evaluated
in one forward (one per ``chunk_size`` coalitions).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase

from tdhook_rl.attribution._perturb import CoalitionMethod, Players, check_chunk_size, make_players
from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.core.keys import as_key
from tdhook_rl.targets import Target

#: the value given to actions that are not legal on the board a target is evaluated on
ILLEGAL_VALUE = -1e9


class BoardPerturbation(ABC):
    """How squares of a board encoding are emptied: the spec :class:`Structured` perturbs with.

    Subclasses state ``key`` (the board entry), ``shape`` (its per-sample shape) and
    ``n_squares``, and implement :meth:`square_labels` and :meth:`perturb`.
    """

    #: the board entry of the TensorDict, e.g. ``"observation"``
    key: NestedKey = "observation"
    #: the per-sample shape of the board entry, e.g. ``(18, 8, 8)``
    shape: tuple[int, ...] = ()
    #: the number of squares (the feature groups)
    n_squares: int = 0

    @abstractmethod
    def square_labels(self) -> torch.Tensor:
        """The square of every feature of the board entry: an integer tensor ``0 ..
        n_squares - 1`` broadcastable to ``shape`` (e.g. ``arange(64).view(1, 8, 8)``)."""

    @abstractmethod
    def perturb(
        self, board: torch.Tensor, context: TensorDictBase, absent: torch.Tensor
    ) -> dict[NestedKey, torch.Tensor]:
        """The boards with the squares of each coalition emptied.

        Args:
            board: the board entry ``(*batch, *shape)``.
            context: the module's other inputs (batch ``batch``).
            absent: ``(P, n_squares)`` bool, True where the square is emptied.

        Returns:
            the board entry and every entry derived from it that the module reads (legal-move
            masks), each ``(P, *batch, ...)``.
        """


def _check_method(method: Any) -> CoalitionMethod:
    if not isinstance(method, CoalitionMethod):
        raise TypeError(
            "Structured runs a coalition method (FeatureAblation, SARFA, ExactShapley, "
            f"ShapleyValueSampling, KernelShap, Lime), got {method!r}"
        )
    default_baseline = isinstance(method.baseline, int | float) and float(method.baseline) == 0.0
    if method.feature_mask is not None or method.background is not None or not default_baseline:
        raise ValueError(
            f"Structured takes the feature groups (squares) and the missing-feature model (the "
            f"square emptied) from the board; build {type(method).__name__} without "
            "feature_mask, baseline or background"
        )
    return method


class Structured(AttributionMethod):
    """A coalition method whose feature groups are the squares of a board and whose missing
    features are squares emptied the way the game defines it.

    ``method`` chooses the coalitions and combines the target values (its own
    ``feature_mask`` and ``baseline`` are not used, so it is built without them); ``board``
    (a :class:`BoardPerturbation`) builds, for every coalition and sample, the board with the
    absent squares emptied and the entries derived from it (legal-move masks), all up front;
    then every coalition of every sample goes through the module in one forward (one per
    ``chunk_size`` coalitions). Each feature of a square carries the square's value. Squares
    that cannot be emptied (a chess king, see the board's docs) stay as they are: their
    attribution is 0 for feature ablation and SARFA, and they are dummy players for the
    Shapley methods.

    For SARFA over legal moves only, make every target a legal action's value: see
    :func:`masked_action_targets` (a fixed action set, Connect Four's columns) and
    :func:`legal_move_targets` (the legal moves of each position, chess). A target that is
    the log-probability of the chosen action (``ActionLogProb``) becomes ``-inf`` on a board
    where that action is no longer legal (its piece removed): feature ablation then gives
    that square ``+inf``, "the move needs this square".

    Args:
        method: a :class:`~tdhook_rl.attribution._perturb.CoalitionMethod`.
        board: the board's perturbation spec.
        chunk_size: at most this many coalitions per forward (``None``: the method's own
            ``chunk_size``, else all at once).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> from tdhook_rl.attribution import FeatureAblation
        >>> class Cells(BoardPerturbation):   # a 1 x 4 board whose cells are emptied to 0
        ...     shape, n_squares = (1, 4), 4
        ...     def square_labels(self):
        ...         return torch.arange(4).view(1, 4)
        ...     def perturb(self, board, context, absent):
        ...         # (P, 4) -> (P, *[1] * batch_dims, 1, 4): every sample's cells emptied alike
        ...         return {"observation": board * ~absent.view(-1, *[1] * (board.dim() - 1), 4)}
        >>> net = TensorDictModule(torch.nn.Flatten(-2), ["observation"], ["values"])
        >>> explained = thr.Attributed(net, Structured(FeatureAblation(), Cells()),
        ...                            inputs=["observation"], targets={"v": ("values", 1)})
        >>> td = TensorDict(observation=torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]), batch_size=[1])
        >>> explained(td)["attribution", "v", "observation"]
        tensor([[[0., 2., 0., 0.]]])
    """

    abs: bool

    def __init__(
        self, method: CoalitionMethod, board: BoardPerturbation, chunk_size: int | None = None
    ) -> None:
        self.method = _check_method(method)
        if not isinstance(board, BoardPerturbation):
            raise TypeError(f"board must be a BoardPerturbation spec, got {board!r}")
        self.board = board
        self.key = as_key(board.key, "board key")
        self.chunk_size = check_chunk_size(chunk_size)
        self.has_convergence_delta = method.has_convergence_delta  # type: ignore[misc]
        self.abs = bool(getattr(method, "abs", False))
        self._players: dict[Any, Players] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_players": {}}

    def check_inputs(self, inputs: Sequence[NestedKey]) -> None:
        if list(inputs) != [self.key]:
            raise ValueError(
                f"Structured perturbs the board entry {self.key!r} alone; the inputs are "
                f"{list(inputs)}: use inputs=[{self.key!r}]"
            )

    def check(self, inputs: Mapping[NestedKey, torch.Tensor], td: TensorDictBase) -> None:
        board = inputs[self.key]
        feature = tuple(board.shape[td.batch_dims :])
        if feature != tuple(self.board.shape):
            raise ValueError(
                f"the board entry {self.key!r} has per-sample shape {feature}; "
                f"{type(self.board).__name__} encodes boards of shape {tuple(self.board.shape)}"
            )
        self.method.check_players(self.players(board, td.batch_dims))

    def players(self, board: torch.Tensor, batch_dims: int) -> Players:
        """The squares as feature groups of the board entry (made once per device)."""
        if board.device not in self._players:
            labels = {self.key: self.board.square_labels()}
            self._players[board.device] = make_players(labels, {self.key: board}, batch_dims)
        return self._players[board.device]

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        board = inputs[self.key]
        players = self.players(board, len(engine.batch_shape))
        self.method.check_players(players)
        present = self.method.coalitions(players.n, board.device)  # (P, G)
        n_p = present.shape[0]
        chunk = self.chunk_size or self.method.chunk_size or max(n_p, 1)
        outs = []
        with torch.no_grad():
            for start in range(0, n_p, chunk):
                absent = ~present[start : start + chunk]  # (c, G)
                entries = self.board.perturb(board, engine.context, absent)  # (c, *batch, ...)
                outs.append(engine.evaluate(entries, lead=(absent.shape[0],)))  # (n_t, c, *batch)
        values = torch.cat(outs, 1)  # (n_t, P, *batch)
        groups, delta = self.method.combine(present, values)
        return AttributionResult(players.spread(groups), delta)

    def __repr__(self) -> str:
        return f"Structured({self.method!r}, {self.board!r}, chunk_size={self.chunk_size})"


class MaskedAction(Target):
    """Action ``index``'s value (a logit or a Q-value in ``values``), or
    :data:`ILLEGAL_VALUE` where ``mask`` says the action is not legal on the board the
    module was just evaluated on (a perturbed board's recomputed mask): SARFA over the legal
    actions of each board, for heads that do not mask their own output.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict(logits=torch.tensor([[1.0, 2.0]]),
        ...                 action_mask=torch.tensor([[True, False]]), batch_size=[1])
        >>> MaskedAction(1)(td, TensorDict())
        tensor([-1.0000e+09])
    """

    def __init__(self, index: int, values: NestedKey = "logits", mask: NestedKey = "action_mask"):
        self.index = index
        self.values = as_key(values, "values key")
        self.mask = as_key(mask, "mask key")

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        value = output.get(self.values)[..., self.index]
        legal = output.get(self.mask)[..., self.index]
        return value.masked_fill(~legal, ILLEGAL_VALUE)

    def __repr__(self) -> str:
        return f"MaskedAction({self.index}, values={self.values!r}, mask={self.mask!r})"


class LegalMove(Target):
    """The value of the ``slot``-th legal move *of the unperturbed position* (its action is
    read from ``legal_actions`` of the original forward), or :data:`ILLEGAL_VALUE` when that
    move is not legal on the board the module was just evaluated on, or when the position
    has fewer legal moves (padding).

    For SARFA over a large action space whose legal moves change from position to position
    (chess: 29,275 SAN actions, at most 218 legal): ``{f"m{i}": LegalMove(i) for i in
    range(218)}`` (:func:`legal_move_targets`) compares the same moves in the position and in
    every perturbed one.

    Examples:
        >>> from tensordict import TensorDict
        >>> out = TensorDict(logits=torch.tensor([[0.5, 2.0, 3.0]]),
        ...                  action_mask=torch.tensor([[True, False, True]]), batch_size=[1])
        >>> original = TensorDict(legal_actions=torch.tensor([[2, 1, 3]]), batch_size=[1])
        >>> [float(LegalMove(i)(out, original)) for i in range(3)]
        [3.0, -1000000000.0, -1000000000.0]
    """

    def __init__(
        self,
        slot: int,
        values: NestedKey = "logits",
        mask: NestedKey = "action_mask",
        legal_actions: NestedKey = "legal_actions",
    ) -> None:
        self.slot = slot
        self.values = as_key(values, "values key")
        self.mask = as_key(mask, "mask key")
        self.legal_actions = as_key(legal_actions, "legal_actions key")
        self.reference_keys = (self.legal_actions,)

    def __call__(self, output: TensorDictBase, reference: TensorDictBase) -> torch.Tensor:
        value = output.get(self.values)  # (N, A)
        action = reference.get(self.legal_actions)[..., self.slot : self.slot + 1]  # (N, 1)
        inside = action < value.shape[-1]  # padding is an action past the last one
        at = action.clamp(max=value.shape[-1] - 1)
        legal = output.get(self.mask).gather(-1, at) & inside
        return value.gather(-1, at).masked_fill(~legal, ILLEGAL_VALUE).squeeze(-1)

    def __repr__(self) -> str:
        return f"LegalMove({self.slot}, values={self.values!r})"


def masked_action_targets(n_actions: int, **keys: NestedKey) -> dict[str, Target]:
    """``{"a0": MaskedAction(0), ...}``: one target per action, for SARFA over legal actions.

    Examples:
        >>> list(masked_action_targets(7))[:2]
        ['a0', 'a1']
    """
    return {f"a{i}": MaskedAction(i, **keys) for i in range(n_actions)}


def legal_move_targets(n_slots: int, **keys: NestedKey) -> dict[str, Target]:
    """``{"m0": LegalMove(0), ...}``: one target per legal-move slot of the position.

    Examples:
        >>> list(legal_move_targets(218))[-1]
        'm217'
    """
    return {f"m{i}": LegalMove(i, **keys) for i in range(n_slots)}


__all__ = [
    "ILLEGAL_VALUE",
    "BoardPerturbation",
    "LegalMove",
    "MaskedAction",
    "Structured",
    "legal_move_targets",
    "masked_action_targets",
]
