"""Plots for activation patching: attribution patching's estimate against the exact effect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from tdhook_rl.viz._mpl import pyplot

if TYPE_CHECKING:
    from tdhook_rl.latent.attribution_patching import AtPResult
    from tdhook_rl.latent.patching import PatchingResult


def atp_vs_exact(
    atp: AtPResult,
    exact: PatchingResult,
    *,
    per: Literal["sample", "site"] = "sample",
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Any:
    """AtP's estimate (y) against exact activation patching (x), one panel per head, with the
    diagonal where the two agree and Spearman's correlation in each panel's title.

    Args:
        atp: an :func:`~tdhook_rl.attribution_patching` result.
        exact: the :func:`~tdhook_rl.activation_patching` result for the same sites and heads.
        per: ``"sample"``: one point per site and sample, ``patched - corrupted`` (exact)
            against AtP's first-order ``effects``, one colour per site (a site whose points
            leave the diagonal is where the linear estimate fails); ``"site"``: one labelled
            point per site, the restored fractions.
        labels: display names of sites (``{"module.1.module.3": "critic h2"}``).
        title: figure title.

    Returns:
        The matplotlib figure.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> import tdhook_rl as thr
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> critic = TensorDictModule(net, ["observation"], ["state_value"])
        >>> clean = TensorDict(observation=torch.randn(8, 3), batch_size=[8])
        >>> args = (critic, clean, clean.apply(torch.neg), {"value": "state_value"})
        >>> fig = atp_vs_exact(thr.attribution_patching(*args), thr.activation_patching(*args))
        >>> len(fig.axes)
        1
    """
    if per not in ("sample", "site"):
        raise ValueError(f"per must be 'sample' or 'site', got {per!r}")
    if exact.sites != atp.sites or exact.heads != atp.heads:
        raise ValueError(
            f"the exact result has sites {exact.sites} and heads {exact.heads}, the AtP one "
            f"{atp.sites} and {atp.heads}; plot two runs with the same sites and heads"
        )
    names = [(labels or {}).get(site, site) for site in atp.sites]
    rho = atp.rank_correlation(exact) if per == "site" else None
    per_sample = atp.sample_correlation(exact) if per == "sample" else None
    true = exact.patched - exact.corrupted
    plt = pyplot()
    n = len(atp.heads)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for j, (head, ax) in enumerate(zip(atp.heads, axes[0], strict=True)):
        if per == "site":
            xs, ys = exact.restored[:, j].tolist(), atp.estimate[:, j].tolist()
            ax.scatter(xs, ys, color="tab:blue", zorder=3)
            for x, y, name in zip(xs, ys, names, strict=True):
                ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("exact: restored fraction")
            ax.set_ylabel("AtP: estimated restored fraction")
            ax.set_title(f"{head}: Spearman over sites {rho[head]:.2f}" if rho else head)
            points = xs + ys
        else:
            points = []
            for i, name in enumerate(names):
                x, y = true[i, j].reshape(-1), atp.effects[i, j].reshape(-1)
                if x.abs().max() == 0 and y.abs().max() == 0:
                    continue  # the head does not depend on this site
                r = float(per_sample[i, j]) if per_sample is not None else float("nan")
                ax.scatter(
                    x.tolist(),
                    y.tolist(),
                    s=9,
                    alpha=0.6,
                    color=colors[i % len(colors)],
                    label=f"{name} (rho {r:.2f})",
                )
                points += x.tolist() + y.tolist()
            ax.set_xlabel("exact: patched - corrupted")
            ax.set_ylabel("AtP: first-order estimate")
            ax.set_title(head)
            ax.legend(fontsize=7, loc="best", title="site (Spearman over samples)")
        finite = [p for p in points if p == p and abs(p) != float("inf")]
        if finite:
            low, high = min(finite), max(finite)
            ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--", zorder=1)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
    fig.suptitle(title or "Attribution patching vs exact activation patching")
    fig.tight_layout()
    return fig
