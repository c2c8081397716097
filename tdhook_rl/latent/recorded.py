"""``Recorded``: a drop-in TorchRL wrapper that writes activations into the rollout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from tdhook_rl.core.grad_mode import inside_functional_transform
from tdhook_rl.core.intercept import Interception, intercepting
from tdhook_rl.core.keys import as_key, key_tuple
from tdhook_rl.core.sites import KeySite, ModuleSite, Site, SiteSpec, resolve_sites, written_keys
from tdhook_rl.core.vmap import is_vmapped, whole_tensor
from tdhook_rl.core.wrapper import TransparentWrapper


class Recorded(TransparentWrapper):
    """Runs a TensorDict module unchanged and writes the activation of each site.

    Each site's activation is written, detached, under ``(out_key, name)``; its leading
    dimensions are the TensorDict's batch dimensions, so a rollout holds ``[T, *batch, *f]``.
    The activation is the one the network goes on with: at a site that an
    :class:`~tdhook_rl.Intervened` changes (inside or outside this wrapper), the changed one.
    Sites are intercepted only during the call, for the calling thread only (another thread
    running the same module is not recorded), and nothing is left on the module afterwards,
    exceptions included (see :mod:`tdhook_rl.core.intercept`). When a recorded submodule runs
    several times in one call (a shared trunk called by two heads), the first call is
    recorded. A site
    inside a ``torch.vmap`` of the module (each agent's network of TorchRL's
    ``MultiAgentMLP(share_params=False)``) is recorded whole, the vmapped dimension right
    after the batch dimensions (``[*batch, n_agents, *feature]``).

    Args:
        module: any TensorDict module.
        sites: ``{name: site}``, a list of sites (each named by
            :func:`~tdhook_rl.core.sites.site_name`) or one site. A site is a submodule path as
            ``named_modules()`` spells it (its output; use ``ModuleSite(path, io="input")`` for
            its input), a key written inside a ``TensorDictSequential`` (``KeySite(key)`` or
            the key itself), or every submodule of some types
            (:func:`~tdhook_rl.core.sites.of_type`, e.g. ``of_type(nn.Tanh, under="module.0")``;
            in a mapping its sites are named ``"{name}/{path}"``).
        out_key: the root key of the recorded activations; it may not overlap a key the module
            reads or writes (``ValueError``).
        packed: write all sites as one ``[*batch, F]`` tensor under ``out_key`` (each site
            flattened, in ``sites`` order) instead of one entry per site, and read them back
            with :meth:`unpack` (zero-copy views). TorchRL copies every entry of the
            rollout TensorDict from one step to the next and again on each partial reset,
            and one entry costs less to carry than several: use it for long collection runs,
            with ``Collector(..., postproc=recorded.unpack)`` or
            ``recorded.unpack(env.rollout(...))``. Every site must have the same dtype.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> policy = TensorDictModule(net, ["observation"], ["action"])
        >>> recorded = Recorded(policy, {"hidden": "module.1"})
        >>> td = recorded(TensorDict(observation=torch.randn(5, 4), batch_size=[5]))
        >>> td["activations", "hidden"].shape
        torch.Size([5, 8])

        Packed, for collection runs:

        >>> packed = Recorded(policy, {"hidden": "module.1", "logits": "module.2"}, packed=True)
        >>> td = packed(TensorDict(observation=torch.randn(5, 4), batch_size=[5]))
        >>> td["activations"].shape
        torch.Size([5, 10])
        >>> packed.unpack(td)["activations", "logits"].shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        module: TensorDictModuleBase,
        sites: Mapping[str, SiteSpec] | Sequence[SiteSpec] | SiteSpec,
        *,
        out_key: NestedKey = "activations",
        packed: bool = False,
    ) -> None:
        super().__init__(module)
        if isinstance(sites, Mapping | Sequence) and not isinstance(sites, str) and not sites:
            raise ValueError("sites is empty: name at least one, e.g. {'hidden': 'module.0'}")
        self.sites: dict[str, Site] = resolve_sites(module, sites)
        self.out_key = as_key(out_key, "out_key")
        _check_out_key(module, self.out_key)
        self.valid_key = valid_key(self.out_key)
        _check_out_key(module, self.valid_key)
        self.packed = bool(packed)
        if self.packed:
            _check_no_packed_below(module, self.out_key)
        self.in_keys = list(module.in_keys)
        root = key_tuple(self.out_key)
        if self.packed:
            self.out_keys = [*module.out_keys, self.out_key]
        else:
            self.out_keys = list(module.out_keys) + [(*root, name) for name in self.sites]
        self.out_keys.append(self.valid_key)

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        if inside_functional_transform():
            return self.wrapped(tensordict, *args, **kwargs)
        captured: dict[str, Any] = {}
        observers = [
            Interception(
                target,
                partial(_keep_first, captured, name),
                site.io,
                observe=True,
                element=site.element,
            )
            for name, site, target in self._module_sites()
        ]
        with intercepting(observers):  # only for this call of this thread, exceptions included
            out = self.wrapped(tensordict, *args, **kwargs)
        batch = out.batch_size
        values = {}
        for name, site in self.sites.items():
            found = out.get(site.key, None) if isinstance(site, KeySite) else captured.get(name)
            value = _checked(name, site, found, batch)
            # under no_grad (collectors, env.rollout) there is nothing to detach from
            values[name] = value.detach() if value.requires_grad else value
        # measured here: a collector's zero-filled steps the wrapper did not run (random
        # frames) read False, and probes skip them
        out.set(self.valid_key, torch.ones(batch, dtype=torch.bool, device=out.device))
        existing = out.get(self.out_key, None)
        if self.packed:
            out.set(self.out_key, self._pack(values, batch, existing))
            return out
        if existing is None or all(key in values for key in existing.keys()):
            # one sub-TensorDict write instead of one nested set per site; it replaces the
            # previous step's activations that a collector carries over
            out.set(self.out_key, _as_tensordict(values, batch, out.device))
        else:  # another wrapper writes under the same root: keep its entries
            existing.update(values)
        return out

    @property
    def layout(self) -> dict[str, torch.Size] | None:
        """``{name: feature shape}`` of the packed layout, known after the first call."""
        return self.__dict__.get("_layout")

    def _pack(
        self, values: dict[str, torch.Tensor], batch: torch.Size, existing: Any
    ) -> torch.Tensor:
        if isinstance(existing, TensorDictBase):
            raise ValueError(
                f"{self.out_key!r} already holds per-site activations (another Recorded); "
                "give the packed Recorded its own out_key."
            )
        nb = len(batch)
        shapes = [value.shape[nb:] for value in values.values()]
        layout = self.__dict__.get("_layout")
        if layout is None:
            dtypes = {name: value.dtype for name, value in values.items()}
            if len(set(dtypes.values())) > 1:
                raise TypeError(
                    f"packed=True needs every site in one dtype, got {dtypes}; record them "
                    "with packed=False or in separate Recorded wrappers."
                )
            layout = dict(zip(values, shapes, strict=True))
            self.__dict__["_layout"] = layout
        if shapes != list(layout.values()):
            changed = zip(values, shapes, strict=True)
            name, shape = next((n, s) for n, s in changed if s != layout[n])
            raise ValueError(
                f"site {name!r} gives features of shape {tuple(shape)}, but the packed layout "
                f"fixed at the first call is {tuple(layout[name])}; record sites whose shape "
                "changes with packed=False."
            )
        flat = [value.reshape(*batch, -1) for value in values.values()]
        return torch.cat(flat, dim=-1) if len(flat) > 1 else flat[0]

    def unpack(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Returns a shallow copy of ``tensordict`` with the packed activations split per site.

        ``(out_key, name)`` holds each site's activation with its own feature shape, as views
        of the packed tensor (no copy). The input is not modified, so this serves as a
        collector's ``postproc``, or as a replay buffer's ``transform`` to store packed and
        read per site (``fit_probes`` then streams from the buffer). Data that is already
        unpacked is returned as it is. Where this wrapper has not run (its copy ran in a
        collector's worker process), the layout is learnt by running the module once on the
        first element of ``tensordict``.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tensordict.nn import TensorDictModule
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
            >>> rec = Recorded(TensorDictModule(net, ["observation"], ["h"]), ["module.1"],
            ...                packed=True)
            >>> data = rec(TensorDict(observation=torch.randn(3, 4), batch_size=[3]))
            >>> rec.unpack(data)["activations", "module.1"].shape
            torch.Size([3, 8])
        """
        if not self.packed:
            raise ValueError("unpack() is for Recorded(..., packed=True); this one is not")
        packed = tensordict.get(self.out_key, None)
        if packed is None:
            raise KeyError(f"no recorded activations under {self.out_key!r} to unpack")
        if isinstance(packed, TensorDictBase):
            return tensordict
        layout = self.__dict__.get("_layout") or self._learn_layout(tensordict)
        width = sum(shape.numel() for shape in layout.values())
        if packed.shape[-1] != width:
            raise ValueError(
                f"{self.out_key!r} has {packed.shape[-1]} features per element, the layout "
                f"{dict(layout)} has {width}: this data was not recorded by this wrapper."
            )
        lead = packed.shape[:-1]
        values, start = {}, 0
        for name, shape in layout.items():
            values[name] = packed.narrow(-1, start, shape.numel()).reshape(*lead, *shape)
            start += shape.numel()
        out = tensordict.copy()
        out.set(self.out_key, TensorDict(values, batch_size=tensordict.batch_size))
        return out

    def _learn_layout(self, tensordict: TensorDictBase) -> dict[str, torch.Size]:
        first = tensordict[(0,) * tensordict.batch_dims].select(*self.in_keys, strict=False)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            self(first)
        return self.__dict__["_layout"]

    def _module_sites(self) -> list[tuple[str, ModuleSite, nn.Module]]:
        """``(name, site, submodule)`` of the module sites, looked up once and cached."""
        cached = self.__dict__.get("_site_modules")
        if cached is None:
            cached = [
                (name, site, self.wrapped.get_submodule(site.path))
                for name, site in self.sites.items()
                if isinstance(site, ModuleSite)
            ]
            self.__dict__["_site_modules"] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_site_modules", None)
        return state

    def _extra_repr_items(self) -> dict[str, Any]:
        return {"sites": self.sites, **({"packed": True} if self.packed else {})}


def _check_no_packed_below(module: nn.Module, out_key: NestedKey) -> None:
    """Two packed wrappers on one key would overwrite each other: refuse at construction."""
    while isinstance(module, TransparentWrapper):
        if isinstance(module, Recorded) and module.packed and module.out_key == out_key:
            raise ValueError(
                f"the wrapped module already packs its activations under {out_key!r}; "
                "give this Recorded another out_key."
            )
        module = module.wrapped


def valid_key(out_key: NestedKey) -> NestedKey:
    """The boolean entry :class:`Recorded` writes beside ``out_key``, True on every step it
    recorded. TorchRL's collector preallocates its batch from the policy's first call and
    zero-fills it, so steps the wrapper did not run (``init_random_frames``) read False there
    and zeros in the activations; :func:`~tdhook_rl.probes.fit_probes` leaves them out.

    Examples:
        >>> valid_key("activations"), valid_key(("agent", "acts"))
        ('activations_valid', ('agent', 'acts_valid'))
    """
    parts = key_tuple(out_key)
    if len(parts) == 1:
        return f"{parts[0]}_valid"
    return (*parts[:-1], f"{parts[-1]}_valid")


def _check_out_key(module: nn.Module, out_key: NestedKey) -> None:
    """``out_key`` may not overlap a key the module reads or writes, except the entries of
    other ``Recorded`` wrappers inside that share the root."""
    root = key_tuple(out_key)
    inner = [sub for sub in module.modules() if isinstance(sub, Recorded)]
    shared = any(sub.out_key == out_key for sub in inner)
    flags = {key_tuple(sub.valid_key) for sub in inner}  # nested wrappers share the flag
    reads = list(getattr(module, "in_keys", []))
    for key in [*reads, *written_keys(module)]:
        parts = key_tuple(key)
        if parts in flags and key not in reads:
            continue
        if shared and len(parts) > len(root) and parts[: len(root)] == root:
            continue
        n = min(len(parts), len(root))
        if parts[:n] == root[:n]:
            how = "reads" if key in reads else "writes"
            raise ValueError(
                f"out_key {out_key!r} collides with the key {key!r} that the module {how}; "
                "the activations would overwrite it or be overwritten. Choose another "
                "out_key (e.g. 'activations')."
            )


def _keep_first(store: dict[str, Any], name: str, value: Any) -> None:
    store.setdefault(name, value)


def _as_tensordict(
    values: dict[str, torch.Tensor], batch: torch.Size, device: torch.device | None
) -> TensorDictBase:
    """``TensorDict(values, batch_size=batch, device=device)`` without validating again.

    The values passed ``_checked`` (plain tensors with the batch as leading dimensions), so
    where they already sit on ``device`` tensordict's unchecked constructor is used: it
    saves ~9 us per call (a third of ``Recorded``'s own cost in a collector step). Any other
    case takes the validating constructor, which also moves the values to ``device``.
    """
    unchecked = getattr(TensorDict, "_new_unsafe", None)
    if unchecked is not None and (
        device is None or all(value.device == device for value in values.values())
    ):
        return unchecked(values, batch_size=batch, device=device)
    return TensorDict(values, batch_size=batch, device=device)


def _from_vmap(name: str, value: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """The whole tensor behind the slice ``value`` that a site saw inside one ``torch.vmap``
    (e.g. each agent's network of a ``MultiAgentMLP(share_params=False)``), with the vmapped
    dimension placed right after the batch dimensions: ``[*batch, n_agents, *feature]``, the
    layout of TorchRL's multi-agent entries."""
    whole = whole_tensor(value, len(batch))
    if whole is None:
        raise ValueError(
            f"site {name!r} runs inside nested torch.vmap calls; recording supports one "
            "(e.g. the per-agent networks of MultiAgentMLP). Record a site outside the inner "
            "vmap, or a key the module writes (KeySite)."
        )
    return whole


def _checked(name: str, site: Site, value: Any, batch: torch.Size) -> torch.Tensor:
    if type(value) is torch.Tensor and value.shape[: len(batch)] == batch and not is_vmapped(value):
        return value  # the common case, checked in one line; the reasons follow below
    if isinstance(value, torch.Tensor) and is_vmapped(value):
        return _checked(name, site, _from_vmap(name, value, batch), batch)
    if value is None:
        where = f"key {site.key!r}" if isinstance(site, KeySite) else f"submodule {site.path!r}"
        raise RuntimeError(
            f"site {name!r} ({where}) produced nothing in this call: the module did not run "
            "it, or dropped the key (e.g. selected_out_keys)."
        )
    if isinstance(value, TensorDictBase):
        raise TypeError(
            f"site {name!r} is a TensorDict module; record one of the keys it writes, or the "
            f"network inside it (its path + '.module')."
        )
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"site {name!r} gives a {type(value).__name__}, not a tensor; choose a submodule "
            "that outputs one tensor."
        )
    if value.shape[: len(batch)] != batch:
        raise ValueError(
            f"site {name!r} gives shape {tuple(value.shape)}, whose leading dimensions are not "
            f"the batch {tuple(batch)}; record a site before the batch is reshaped."
        )
    return value
