"""``Attributed``: a drop-in TorchRL policy/critic wrapper that writes attributions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase

from tdhook_rl.attribution import AttributionMethod, resolve_method
from tdhook_rl.attribution.engine import GradientEngine, Strategy
from tdhook_rl.attribution.grouped import attribute_by_group
from tdhook_rl.attribution.hidden import (
    HiddenSite,
    captured,
    checked_activation,
    site_baselines,
    split_inputs,
)
from tdhook_rl.core.grad_mode import gradients_enabled, inside_functional_transform
from tdhook_rl.core.intercept import intercepting
from tdhook_rl.core.keys import as_key, held_keys, key_tuple
from tdhook_rl.core.sites import KeySite, ModuleSite, TypeSite
from tdhook_rl.core.switch import Switch
from tdhook_rl.core.wrapper import TransparentWrapper
from tdhook_rl.targets import Target, as_targets

DELTA_KEY = "completeness_delta"
VALID_KEY = "valid"
ATTRIBUTION = Switch("attribution")


@contextmanager
def attribution_disabled() -> Iterator[None]:
    """Every :class:`Attributed` runs only its module inside the block, in this thread.

    For loss calls: ``ClipPPOLoss`` calls a wrapped critic on every minibatch, and each call
    would run an attribution pass. Outputs are the module's (less ``exclude_outputs``), without
    the attribution entries. Other threads (a collector's) keep attributing. One wrapper
    only: :meth:`Attributed.disabled`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> explained = Attributed(critic, "saliency", inputs=["observation"],
        ...                        targets={"value": "state_value"})
        >>> with attribution_disabled():
        ...     out = explained(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))
        >>> "attribution" in out.keys()
        False
    """
    with ATTRIBUTION.off():
        yield


class Attributed(TransparentWrapper):
    """Runs a TensorDict module unchanged and writes the attribution of every target to inputs.

    The wrapped module acts exactly as before (same outputs, same sampled actions for the same
    seed, in the caller's grad mode). Then, with gradients enabled locally (also inside the
    ``no_grad`` / ``inference_mode`` of collectors and ``env.rollout``), all targets of all
    heads are attributed in one batched pass, and written, detached, under
    ``(out_key, target_name, *input_key)`` with the input's shape. Methods with a completeness
    delta also write ``(out_key, target_name, "completeness_delta")`` with the batch shape.
    Hidden sites among the inputs (captum's layer methods) are each attributed in a pass of
    their own, the input entries in another: an observation and a layer it feeds each get
    what they would get alone (one batched pass per group, all targets in each).

    The wrapper shares the wrapped module's parameters (``state_dict`` keys, ``named_modules``
    paths and ``TensorDict.from_module`` are the raw module's), pickles for multi-process
    collectors, and delegates ``get_dist`` and friends so loss modules accept it. Under a
    ``vmap`` (e.g. GAE calling the critic) it stands aside and only runs the module; so it
    does inside :meth:`disabled` / :func:`attribution_disabled` blocks (loss calls) and
    while ``enabled`` is False.

    Every target also gets ``(out_key, target_name, "valid")``, a boolean of the batch shape
    that the wrapper sets True. TorchRL's collector preallocates its batch from the policy's
    first call and zero-fills it, so steps the wrapper did not attribute (a collector's
    ``init_random_frames``, rows of a replay buffer from a run without the wrapper, see
    :meth:`fill_unmeasured`) read False there, with zeros in the other entries: select on the
    flag before averaging attributions over a replay buffer.

    Args:
        module: any TensorDict module: ``ProbabilisticActor``, ``ValueOperator``,
            ``ActorValueOperator``, a ``TensorDictSequential`` of actor and critic, a
            ``TensorDictModule``.
        method: an :class:`~tdhook_rl.attribution.AttributionMethod` or its name
            (``"saliency"``, ``"input_x_gradient"``, ``"integrated_gradients"``, ``"smoothgrad"``).
        inputs: the floating-point entries to attribute to (read by the module).
        targets: ``{name: target}``; a target is a key of a per-sample scalar
            (``"state_value"``), a key and an index (``("logits", 2)``, the same as
            :class:`~tdhook_rl.targets.Index`), :class:`~tdhook_rl.targets.ActionLogProb`,
            :class:`~tdhook_rl.targets.ActionLoc`, :class:`~tdhook_rl.targets.ActionValue`
            or a callable ``td -> Tensor`` (see :func:`tdhook_rl.targets.as_target`).
        out_key: the root key of the results; it may not collide with an entry the module
            reads or writes (a ``ValueError`` at construction).
        strategy: how the per-target gradients are batched: ``"reverse"`` (one backward over
            one-hot cotangents), ``"forward"`` (forward-mode AD over one-hot tangents, cheaper
            when the inputs have fewer features than there are targets), ``"replicate"``, or
            ``"auto"`` (default): forward mode when the inputs have fewer features than there
            are targets and the module supports it (checked on the first call, with a
            fallback to reverse mode), else reverse mode. The
            :class:`~tdhook_rl.attribution.GradientEngine` in ``self.engine`` decides and
            remembers (``engine.forward_supported``).
        sample_dims: how many leading batch dimensions index independent samples (default:
            all of them). With trajectories ``[B, T]`` read whole by a recurrent module (TorchRL's
            ``LSTMModule``/``GRUModule`` under ``set_recurrent_mode(True)``), ``sample_dims=1``
            makes each trajectory one sample: the module is called on the whole ``[B, T]``
            batch, targets read one step each (``ActionValue(index=t)``,
            ``ActionLogProb(index=t)``, ``Index(key, (t, ...))``), and the attribution of a
            step's target spans the observations of every step, ``[B, T, *feature]`` (what
            the agent's memory carried). Completeness deltas are per trajectory, repeated
            along ``T``.
        exclude_outputs: outputs of the module to remove from what the wrapper returns (they
            can still be targets). For an actor and its critic in one collector:
            ``exclude_outputs=["state_value"]``, which ``GAE`` recomputes and cannot stack
            without a ``("next", "state_value")`` twin ("The sets of keys in the tensordicts
            to stack are exclusive"). Give ``GAE`` and the loss the raw critic.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule, TensorDictSequential
        >>> import tdhook_rl as thr
        >>> from tdhook_rl.targets import Index
        >>> actor = TensorDictModule(torch.nn.Linear(9, 4), ["observation"], ["logits"])
        >>> critic = TensorDictModule(torch.nn.Linear(9, 1), ["observation"], ["state_value"])
        >>> explained = thr.Attributed(
        ...     TensorDictSequential(actor, critic),
        ...     "saliency",
        ...     inputs=["observation"],
        ...     targets={"logit0": Index("logits", 0), "value": "state_value"},
        ... )
        >>> td = explained(TensorDict(observation=torch.randn(10, 2, 9), batch_size=[10, 2]))
        >>> td["attribution", "value", "observation"].shape
        torch.Size([10, 2, 9])
    """

    def __init__(
        self,
        module: TensorDictModuleBase,
        method: AttributionMethod | str,
        *,
        inputs: Sequence[NestedKey] | NestedKey,
        targets: Mapping[str, Any] | Any,
        out_key: NestedKey = "attribution",
        strategy: Strategy | Literal["auto"] = "auto",
        sample_dims: int | None = None,
        exclude_outputs: Sequence[NestedKey] | NestedKey | None = None,
    ) -> None:
        super().__init__(module)
        self.enabled = True
        if sample_dims is not None and (
            isinstance(sample_dims, bool) or not isinstance(sample_dims, int) or sample_dims < 0
        ):
            raise ValueError(f"sample_dims must be None or an int >= 0, got {sample_dims!r}")
        self.sample_dims = sample_dims
        self.method = resolve_method(method)
        if isinstance(inputs, str | tuple | ModuleSite | KeySite | TypeSite):
            inputs = [inputs]
        module_in = list(module.in_keys)
        self.inputs, self.hidden = split_inputs(module, list(inputs), module_in)
        self.targets: dict[str, Target] = as_targets(targets, module)
        if VALID_KEY in self.targets:
            raise ValueError(f"target name {VALID_KEY!r} is reserved (the validity flag)")
        self.exclude_outputs = self._checked_exclusions(exclude_outputs, module)
        # a hidden site's baseline is its activation with the module's inputs at their
        # baseline: a baseline mapping may then name any entry the module reads
        self.method.check_inputs(module_in if self.hidden else self.inputs)
        self.engine = GradientEngine(module, self.targets, strategy)
        self.strategy = strategy
        self.out_key = as_key(out_key, "out_key")
        if any(key_tuple(k)[-1] == DELTA_KEY for k in self.inputs):
            raise ValueError(f"an input key may not end with {DELTA_KEY!r} (reserved for results)")
        if any(key_tuple(k) == (VALID_KEY,) for k in self.inputs):
            raise ValueError(f"an input key may not be {VALID_KEY!r} (reserved for results)")
        self._check_out_key(module)
        self.in_keys = module_in
        excluded = [key_tuple(k) for k in self.exclude_outputs]
        kept = [k for k in module.out_keys if key_tuple(k) not in excluded]
        self.out_keys = kept + self.result_keys()

    @staticmethod
    def _checked_exclusions(
        keys: Sequence[NestedKey] | NestedKey | None, module: TensorDictModuleBase
    ) -> list[NestedKey]:
        if keys is None:
            return []
        if isinstance(keys, str | tuple):  # one key, as for ``inputs``
            keys = [keys]
        keys = [as_key(k, "exclude_outputs key") for k in keys]
        written = [key_tuple(k) for k in module.out_keys]
        for key in keys:
            if key_tuple(key) not in written:
                raise ValueError(
                    f"exclude_outputs names {key!r}, which the module does not write (its "
                    f"out_keys are {list(module.out_keys)}); name one of those."
                )
        return keys

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """This wrapper runs only its module inside the block, in this thread.

        For loss calls that receive the wrapper (a wrapped critic in ``ClipPPOLoss``):
        ``with explained.disabled(): loss_td = loss_module(batch)``. All wrappers at once:
        :func:`attribution_disabled`. Set ``explained.enabled = False`` instead for a pickled
        copy (multi-process collectors) and inside a compiled loss: dynamo cannot read the
        thread-local switch and breaks the graph at the wrapper, not at the attribute.
        """
        with ATTRIBUTION.off(self):
            yield

    def attributing(self) -> bool:
        """Whether a call now runs the attribution pass (not under ``vmap``, not switched off)."""
        return self.enabled and not ATTRIBUTION.is_off(self) and not inside_functional_transform()

    def fill_unmeasured(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Writes every result entry ``tensordict`` lacks, marked not measured: ``valid``
        False, attributions and deltas zero (what TorchRL's collector writes for random
        frames). In place, or into a copy when ``tensordict`` is locked (rows of a memmap
        storage); returns the TensorDict written.

        For a replay buffer written without the wrapper (a plain run's checkpoint): its
        storage took its entries from the first batch, so a ``LazyMemmapStorage`` silently
        drops the wrapper's entries and a ``LazyTensorStorage`` fails on named batches ("Names
        of a subtensordict cannot be modified"). Refill a new buffer with
        ``fill_unmeasured(restored.storage[:len(restored)])`` first (docs/recipes.md).

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tensordict.nn import TensorDictModule
            >>> critic = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
            >>> explained = Attributed(critic, "ig", inputs=["observation"],
            ...                        targets={"value": "state_value"})
            >>> old = TensorDict(observation=torch.randn(5, 3), batch_size=[5])
            >>> sorted(explained.fill_unmeasured(old)["attribution", "value"].keys())
            ['completeness_delta', 'observation', 'valid']
            >>> bool(old["attribution", "value", "valid"].any())
            False
        """
        if tensordict.is_locked:  # e.g. rows read from a memmap storage
            tensordict = tensordict.clone()
        first = tensordict.get((self.inputs or self.in_keys)[0])
        skip = len(key_tuple(self.out_key)) + 1  # the root and the target name
        hidden = {(site.name,) for site in self.hidden}  # their shape is the module's to say
        for key in self.result_keys():
            entry = key_tuple(key)[skip:]
            if key in tensordict.keys(True) or entry in hidden:
                continue
            if entry == (VALID_KEY,):
                value = torch.zeros(tensordict.batch_size, dtype=torch.bool, device=first.device)
            elif entry == (DELTA_KEY,):
                value = first.new_zeros(tensordict.batch_size)
            else:  # an attribution has its input's shape
                value = torch.zeros_like(tensordict.get(entry))
            tensordict.set(key, value)
        return tensordict

    def _check_out_key(self, module: TensorDictModuleBase) -> None:
        """No result key may overwrite, or be written inside, an entry the module reads or
        writes (nor a baseline key the method reads): refused now, not at the first call."""
        used = [*module.in_keys, *module.out_keys, *self.method.context_keys]
        for result in self.result_keys():
            parts = key_tuple(result)
            for key in used:
                other = key_tuple(key)
                n = min(len(parts), len(other))
                if parts[:n] == other[:n]:
                    raise ValueError(
                        f"out_key {self.out_key!r} collides with {key!r}, which the module "
                        f"reads or writes (result {result!r}; module in_keys "
                        f"{list(module.in_keys)}, out_keys {list(module.out_keys)}); choose "
                        "another out_key, e.g. out_key='attribution'."
                    )

    def result_keys(self) -> list[NestedKey]:
        """The keys this wrapper adds to the module's outputs."""
        root = key_tuple(self.out_key)
        keys: list[NestedKey] = []
        for name in self.targets:
            keys += [(*root, name, *key_tuple(k)) for k in self.inputs]
            keys += [(*root, name, site.name) for site in self.hidden]
            if self.method.has_convergence_delta:
                keys.append((*root, name, DELTA_KEY))
            keys.append((*root, name, VALID_KEY))
        return keys

    def _checked_inputs(self, td: TensorDictBase) -> dict[NestedKey, torch.Tensor]:
        values = {}
        for key in self.inputs:
            value = td.get(key, None)
            if value is None:
                raise KeyError(
                    f"input {key!r} is not in the TensorDict (it holds {held_keys(td)}); "
                    f"check Attributed(inputs=...)."
                )
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                dtype = getattr(value, "dtype", type(value).__name__)
                raise TypeError(
                    f"input {key!r} has dtype {dtype}; gradients need a floating-point input. "
                    "Attribute a float encoding instead (e.g. one-hot planes of a board, or a "
                    "transform that casts to float before the network)."
                )
            values[key] = value
        self.method.check(values, td)
        return values

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        # ``enabled`` is read here, where dynamo can trace it (a switched-off wrapper in a
        # compiled loss adds no graph break); the per-thread switch is read in ``_prepare``
        if not self.enabled or inside_functional_transform():  # e.g. GAE's vmap
            return self._excluded(self.wrapped(tensordict, *args, **kwargs))
        prepared = self._prepare(tensordict)  # before the module writes into ``tensordict``
        seen: dict[str, torch.Tensor] = {}  # the hidden sites' activations in this call
        watch = self.hidden if prepared is not None else []
        with intercepting(captured(watch, seen)) if watch else nullcontext():
            out = self.wrapped(tensordict, *args, **kwargs)
        if prepared is not None:
            self._attribute(*prepared, out, tensordict.batch_size, seen)
        return self._excluded(out)

    # Under torch.compile both halves of the pass run eagerly and only the module's forward
    # is compiled: traced, the pass splits into many graphs around autograd.grad, each
    # compiled and recompiled (benchmarks/compile_cost.py measures it).
    @torch.compiler.disable
    def _prepare(
        self, tensordict: TensorDictBase
    ) -> tuple[dict[NestedKey, torch.Tensor], TensorDictBase] | None:
        """The inputs (checked) and the module's other inputs, or None when switched off."""
        if ATTRIBUTION.is_off(self):
            return None
        inputs = self._checked_inputs(tensordict)
        context_keys = [k for k in self.in_keys if k not in self.inputs]
        context_keys += [k for k in self.method.context_keys if k not in context_keys]
        return inputs, tensordict.select(*context_keys, strict=False)

    @torch.compiler.disable
    def _attribute(
        self,
        inputs: dict[NestedKey, torch.Tensor],
        context: TensorDictBase,
        out: TensorDictBase,
        batch: torch.Size,
        seen: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Runs the attribution pass and writes its results into ``out`` (``seen``: the
        hidden sites' activations in the module's call)."""
        reference_keys = [k for t in self.targets.values() for k in t.reference_keys]
        samples, inner = self._sample_split(batch)
        with gradients_enabled():
            # clones turn inference tensors into ordinary ones and keep the caller's untouched
            context = context.detach().clone()
            reference = out.select(*reference_keys, strict=False).detach().clone()
            if inner:  # the inner batch dimensions become part of each sample
                context.batch_size = samples
                reference.batch_size = samples
            values: dict[Any, torch.Tensor] = {k: v.detach().clone() for k, v in inputs.items()}
            if self.hidden:
                if inner:
                    raise ValueError("hidden-site inputs cannot be combined with sample_dims")
                source = context.copy()  # every entry the module read, for the site baselines
                for key in inputs:
                    source.set(key, values[key])
                for site in self.hidden:
                    value = checked_activation(site, (seen or {}).get(site.name), batch)
                    values[site] = value.detach().clone()
                baselines = site_baselines(self.wrapped, self.hidden, self.method, source)
                for site, value in baselines.items():
                    context.set(site.baseline_key, value)
            result = attribute_by_group(self.method, self.engine, values, context, reference, inner)
        root = key_tuple(self.out_key)
        device = next(iter(values.values())).device
        for i, name in enumerate(self.targets):
            for key, value in result.attributions.items():
                entry = (key.name,) if isinstance(key, HiddenSite) else key_tuple(key)
                out.set((*root, name, *entry), value[i].detach())
            if result.delta is not None:  # one per sample, repeated along its inner dims
                delta = result.delta[i].detach()
                out.set(
                    (*root, name, DELTA_KEY),
                    delta.reshape(*samples, *[1] * len(inner)).expand(batch) if inner else delta,
                )
            out.set((*root, name, VALID_KEY), torch.ones(batch, dtype=torch.bool, device=device))

    def _excluded(self, out: TensorDictBase) -> TensorDictBase:
        if self.exclude_outputs:  # in place: the collector keeps the TensorDict it passed in
            out.exclude(*self.exclude_outputs, inplace=True)
        return out

    def _sample_split(self, batch: torch.Size) -> tuple[torch.Size, torch.Size]:
        """The caller's batch split into samples and the dimensions inside a sample."""
        if self.sample_dims is None or self.sample_dims == len(batch):
            return batch, torch.Size()
        if self.sample_dims > len(batch):
            raise ValueError(
                f"sample_dims={self.sample_dims} but the TensorDict has {len(batch)} batch "
                f"dimension(s) {tuple(batch)}"
            )
        return batch[: self.sample_dims], batch[self.sample_dims :]

    def _extra_repr_items(self) -> dict[str, Any]:
        return {"method": self.method, "inputs": self.inputs, "targets": self.targets}
