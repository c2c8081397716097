"""GradCAM (Selvaraju et al., 2017) at a convolutional hidden site, every target at once."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from tensordict import NestedKey

from tdhook_rl.attribution.base import AttributionMethod, AttributionResult
from tdhook_rl.attribution.engine import GradientEngine
from tdhook_rl.attribution.hidden import HiddenSite


class GradCAM(AttributionMethod):
    """``ReLU(sum_c w_c A_c)`` with ``w_c`` the spatial mean of ``d target / d A_c``, for a
    site whose activation is ``[*batch, C, H, W]`` (a conv trunk: the Connect Four and chess
    nets, pixel agents), as captum's ``LayerGradCam``, for every target of every head from one
    batched backward.

    Use it with the conv site as the input: ``Attributed(net, GradCAM(), inputs=["module.conv.1"],
    targets=...)`` writes ``("attribution", head, site)`` of shape ``[*batch, H, W]`` (or
    ``size`` when given: upsampled bilinearly to the input's spatial shape, for overlays).

    Args:
        relu: keep only the positive evidence (GradCAM's ReLU); ``False`` keeps the sign.
        size: ``(H_in, W_in)`` to upsample the maps to, or ``None`` for the site's resolution.

    Examples:
        >>> import tdhook_rl as thr
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 36, 2))
        >>> policy = TensorDictModule(net, ["board"], ["logits"])
        >>> explained = thr.Attributed(policy, GradCAM(size=(6, 6)), inputs=["module.1"],
        ...                            targets={"left": ("logits", 0), "right": ("logits", 1)})
        >>> out = explained(TensorDict(board=torch.randn(5, 3, 6, 6), batch_size=[5]))
        >>> out["attribution", "left", "module.1"].shape
        torch.Size([5, 6, 6])
    """

    def __init__(self, relu: bool = True, size: tuple[int, int] | None = None) -> None:
        if size is not None and (
            len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size)
        ):
            raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
        self.relu = bool(relu)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def attribute(
        self, engine: GradientEngine, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> AttributionResult:
        batch_dims = len(engine.batch_shape)
        for key, x in inputs.items():
            if x.ndim - batch_dims != 3:
                name = key.name if isinstance(key, HiddenSite) else key
                raise ValueError(
                    f"GradCAM needs a [*batch, C, H, W] activation; {name!r} has per-sample "
                    f"shape {tuple(x.shape[batch_dims:])}: attribute to a conv layer's output"
                )
        grads = engine.gradients(inputs)  # key -> (n_t, *batch, C, H, W)
        maps = {}
        for key, g in grads.items():
            weights = g.mean((-2, -1), keepdim=True)  # (n_t, *batch, C, 1, 1)
            cam = (weights * inputs[key]).sum(-3)  # (n_t, *batch, H, W)
            if self.relu:
                cam = cam.clamp_min(0)
            if self.size is not None:
                lead = cam.shape[:-2]
                flat = cam.reshape(-1, 1, *cam.shape[-2:])
                up = F.interpolate(flat, size=self.size, mode="bilinear", align_corners=False)
                cam = up.reshape(*lead, *self.size)
            maps[key] = cam
        return AttributionResult(maps)

    def __repr__(self) -> str:
        return f"GradCAM(relu={self.relu}, size={self.size})"
