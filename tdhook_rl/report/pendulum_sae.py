"""The double-pendulum report's sparse-autoencoder section (``tdhook-rl explain --sae``).

A TopK SAE (:class:`~tdhook_rl.concepts.SparseAutoencoder`, seeded) is trained on the
activations of the actor's last hidden layer recorded over the report's rollout. The section
states how well it reconstructs them (fraction of variance explained, dead features, L0) and,
for the features that move the policy most (mean ``|attribution|`` to the policy head), shows
their top-activating states drawn as pendulum frames, their activation histograms, their
attribution to the policy and value heads (:func:`~tdhook_rl.concepts.feature_attributions`)
and the measured effect of steering along their decoder direction through
:class:`~tdhook_rl.Intervened` (:class:`~tdhook_rl.concepts.SAEFeature`): the mean
``|delta action|`` over the rollout's states when ``alpha * decoder[:, j]`` is added to the
layer, ``alpha`` being the feature's largest contribution in the data
(``max f_j * input_scale``, activation units).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl.concepts import (
    Resampling,
    SAEFeature,
    SAETrainer,
    SparseAutoencoder,
    feature_attributions,
    feature_dashboard,
    sae_metrics,
)
from tdhook_rl.evaluate import intervention_effect
from tdhook_rl.latent.intervened import Intervened

__all__ = ["SAE_CONFIG", "one_thread", "sae_layer", "sae_section", "steering_effect", "train_sae"]

#: the SAE the section trains: dictionary ``expansion`` times the layer's width, ``k`` active
SAE_CONFIG: dict[str, Any] = {
    "expansion": 2,
    "k": 8,
    "steps": 600,
    "batch_size": 256,
    "lr": 3e-3,
}
TOP = 6  # top-activating states drawn per feature


def sae_layer(layers: Sequence[Any]) -> Any:
    """The layer the section reads: the actor's last hidden layer (a shared one included).

    Examples:
        >>> from tdhook_rl.agents import load
        >>> from tdhook_rl.report.double_pendulum import hidden_layers
        >>> sae_layer(hidden_layers(load("double_pendulum"))).name
        'actor h2'
    """
    mine = [layer for layer in layers if layer.actor_path is not None]
    if not mine:
        raise ValueError("the SAE section needs a hidden layer of the actor; the agent has none")
    return mine[-1]


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread for the block (then as before): the SAE's matrices are tiny,
    and on a loaded 2-core machine 600 steps took 0.9 s on one thread against ~13 s on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_sae(activations: torch.Tensor, seed: int) -> SparseAutoencoder:
    """A TopK SAE (:data:`SAE_CONFIG`) trained on ``activations [N, d]``, seeded.

    Examples:
        >>> sae = train_sae(torch.randn(300, 8).tanh(), seed=0)
        >>> sae.n_features, sae.k
        (16, 8)
    """
    d = activations.shape[-1]
    cfg = SAE_CONFIG
    sae = SparseAutoencoder(d, cfg["expansion"] * d, kind="topk", k=cfg["k"], seed=seed)
    sae = sae.to(activations.device)
    trainer = SAETrainer(
        sae,
        lr=cfg["lr"],
        resampling=Resampling(dead_after=150, check_every=100),
        seed=seed,
        progress=False,
    )
    with one_thread():
        trainer.fit(activations, batch_size=cfg["batch_size"], steps=cfg["steps"])
    return sae


@torch.no_grad()
def steering_effect(
    actor: Any, site: str, sae: SparseAutoencoder, feature: int, alpha: float, states: Any
) -> float:
    """Mean ``|action(steered) - action(clean)|`` over ``states`` (deterministic actions),
    steering by adding ``alpha * decoder[:, feature]`` at ``site`` of ``actor``."""
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        clean = actor(states.clone())["action"]
        steer = SAEFeature(sae, feature, alpha=alpha)
        steered = Intervened(actor, {site: steer})(states.clone())["action"]
    return float((steered - clean).abs().mean())


def sae_section(
    report: Any,
    agent: Any,
    rollout: TensorDictBase,
    layers: Sequence[Any],
    policy: Any,
    summary: dict[str, Any],
    opts: Any,
) -> SparseAutoencoder:
    """Writes the section, fills ``summary["sae"]`` (the layer, the SAE's configuration and
    metrics, and one row per shown feature) and returns the trained SAE.

    Args:
        report: the :class:`~tdhook_rl.report.writer.ReportWriter`.
        agent: the double-pendulum agent (``actor``, ``actor_critic``).
        rollout: the report's rollout, recorded with ``("activations", <layer name>)`` and
            ``"qpos"``.
        layers: :func:`~tdhook_rl.report.double_pendulum.hidden_layers` of the agent.
        policy: the policy head's target (as the attribution section explains it).
        summary: the report's summary.
        opts: the :class:`~tdhook_rl.report.options.ExplainOptions` (``seed``,
            ``sae_features``).
    """
    from tdhook_rl.concepts.plots import plot_feature_dashboard
    from tdhook_rl.viz.sae_examples import sae_examples

    layer = sae_layer(layers)
    flat = rollout.reshape(-1)
    acts = flat["activations", layer.name].reshape(flat.shape[0], -1).float()
    torch.manual_seed(opts.seed)
    sae = train_sae(acts, opts.seed)
    metrics = sae_metrics(sae, acts)
    inputs = flat.select(*[k for k in ("observation", "action") if k in flat.keys()])
    with set_exploration_type(ExplorationType.DETERMINISTIC), one_thread():
        attr = feature_attributions(
            agent.actor_critic,
            inputs,
            layer.path,
            sae,
            {"policy": policy, "value": "state_value"},
        ).detach()  # (2, N, F)
    magnitude = attr.abs().mean(1)  # (2, F)
    n_show = min(opts.sae_features, sae.n_features)
    chosen = magnitude[0].argsort(descending=True)[:n_show].tolist()
    board = feature_dashboard(sae, acts, features=chosen, top=TOP, bins=20)
    states = flat["observation"].new_zeros(flat.shape[0], 3)
    if "qpos" in flat.keys():
        states = flat["qpos"].reshape(flat.shape[0], 3).float()
    rows, records = [], []
    env = agent.make_env(opts.episodes, seed=opts.seed, device=opts.device)
    for i, j in enumerate(chosen):
        alpha = float(board.top_values[i, 0]) * float(sae.input_scale)
        with one_thread():
            effect = steering_effect(agent.actor, layer.actor_path, sae, j, alpha, inputs)
            closed = intervention_effect(
                env,
                agent.actor,
                {layer.actor_path: SAEFeature(sae, j, alpha=alpha)},
                episodes=opts.episodes,
                seed=opts.seed,
                max_steps=opts.ablation_steps,
            ).summary["returns"]
        record = {
            "feature": j,
            "frequency": float(board.frequency[i]),
            "max_value": float(board.top_values[i, 0]),
            "policy_attribution_abs": float(magnitude[0, j]),
            "policy_attribution_mean": float(attr[0, :, j].mean()),
            "value_attribution_abs": float(magnitude[1, j]),
            "value_attribution_mean": float(attr[1, :, j].mean()),
            "steering_alpha": alpha,
            "steering_mean_abs_delta_action": effect,
            "steering_return": {k: closed[k] for k in ("clean", "intervened", "change",
                                                       "low", "high")},
            "top_indices": board.top_indices[i].tolist(),
        }  # fmt: skip
        records.append(record)
        rows.append([j, record["frequency"], record["max_value"],
                     record["policy_attribution_abs"], record["policy_attribution_mean"],
                     record["value_attribution_abs"], alpha, effect,
                     closed["change"], closed["low"], closed["high"]])  # fmt: skip
    env.close()
    cfg = SAE_CONFIG
    summary["sae"] = {
        "layer": layer.name,
        "site": layer.path,
        "kind": sae.kind,
        "n_features": sae.n_features,
        "k": sae.k,
        "steps": cfg["steps"],
        "samples": int(metrics["n"]),
        "fve": metrics["fve"],
        "dead_fraction": metrics["dead_fraction"],
        "l0": metrics["l0"],
        "mse": metrics["mse"],
        "features": records,
    }
    report.section(
        f"Sparse autoencoder features of {layer.name}",
        f"A TopK sparse autoencoder ({sae.n_features} features, k = {sae.k} active per state, "
        f"{cfg['steps']} Adam steps, seed {opts.seed}) trained on the {int(metrics['n'])} "
        f"activations of {layer.name} recorded over the rollout explains "
        f"{metrics['fve']:.1%} of their variance (fraction of variance explained, measured on "
        f"the same states); {metrics['dead_fraction']:.1%} of its features never fire there, "
        f"and a state uses {metrics['l0']:.1f} features on average. Shown: the {n_show} "
        "features with the largest mean |attribution| to the policy head (first-order: "
        "gradient times the feature's decoded contribution; exact for a head linear in the "
        "layer)."
        + (
            f" The critic does not read {layer.name} (the actor's own layer), so every "
            "feature's attribution to the value head is 0 by construction."
            if layer.name.startswith("actor")
            else ""
        ),
    )
    report.figure(
        sae_examples(board, states, suptitle=f"top-activating states ({layer.name})"),
        "sae_examples",
        "The states on which each feature fires most, drawn from the simulator's qpos (cart "
        "on the rail, two poles; dashed red: the tip height of 1 m below which an episode "
        "ends). Titles: the state's index in the rollout (flattened, env-major) and the "
        "feature's value.",
    )
    report.figure(
        plot_feature_dashboard(board, columns=3),
        "sae_histograms",
        "Each shown feature's non-zero activations over the rollout (red ticks: the top "
        "values drawn above).",
    )
    report.table(
        ["feature", "fires on", "max value", "mean |attr.| policy", "mean attr. policy",
         "mean |attr.| value", "steering alpha", "mean |delta action|",
         "return change", "95% low", "95% high"],
        rows,
    )  # fmt: skip
    report.paragraph(
        "Steering: alpha times the feature's unit-norm decoder direction is added to "
        f"{layer.name} of the actor (tdhook_rl.Intervened with SAEFeature) on every state of "
        "the rollout, open loop; alpha is the feature's largest contribution in the data "
        "(max value times the SAE's input scale, activation units). The last column is the "
        "mean absolute change of the deterministic action (the action lies in [-1, 1]). "
        f"Closed loop: the same steering for whole episodes, n = {opts.episodes} paired "
        f"episodes of up to {opts.ablation_steps} steps from the same seeds with and without "
        "it; the change in return with its 95% bootstrap interval."
    )
    return sae
