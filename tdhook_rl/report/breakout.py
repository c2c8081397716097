"""``tdhook-rl explain --agent breakout``: the MinAtar Breakout agent plays a few seeded
episodes and the report shows, frame by frame, where it looks (Greydanus et al., 2018).

Every step goes through :class:`tdhook_rl.Attributed` with
:class:`~tdhook_rl.attribution.PerturbationSaliency` (a Gaussian mask of standard deviation
``radius`` every ``stride`` pixels blends the frame with its blur, sigma 1), all heads in one
pass: each of the three logits and ``state_value``. As in the paper, the *policy* map is
``1/2 ||logits(I) - logits(I')||^2``, the sum of the three logit maps, and the *value* map is
``1/2 (V(I) - V(I'))^2``. One GIF per episode shows the frame, the policy map (blue) and the
value map (red); ``movie_<n>.npz`` holds the frames and maps behind it.

For a few frames of the first episode, ``stills.png`` sets side by side the Greydanus maps,
occlusion (each pixel emptied in every channel, :class:`~tdhook_rl.attribution.Occlusion`)
and the ``--method`` gradient map (IG from the empty frame by default, summed over the
channels) of the chosen action's log-probability and of the value.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from tdhook_rl.attributed import Attributed
from tdhook_rl.attribution import Occlusion, PerturbationSaliency
from tdhook_rl.report.common import attribution_method, finish, top_entries
from tdhook_rl.report.options import BreakoutOptions
from tdhook_rl.report.writer import ReportWriter
from tdhook_rl.targets import ActionLogProb

__all__ = [
    "ACTIONS",
    "BLUR_SIGMA",
    "BreakoutOptions",
    "explain_breakout",
    "greydanus_heads",
    "play_and_attribute",
    "summary_line",
]

#: the agent's actions, in the order of its logits
ACTIONS = ("noop", "left", "right")
#: the blur of the Greydanus perturbation (pixels)
BLUR_SIGMA = 1.0
#: the targets of the stills' signed methods
STILL_HEADS: dict[str, Any] = {"policy": ActionLogProb(), "value": "state_value"}
PIXELS = [f"r{r}c{c}" for r in range(10) for c in range(10)]
KEEP = ("observation", "action", "logits", "state_value", "attribution")


def greydanus_heads() -> dict[str, Any]:
    """The targets of the movie: one per logit (``"logit_noop"``, ...) and ``"value"``.

    Examples:
        >>> sorted(greydanus_heads())
        ['logit_left', 'logit_noop', 'logit_right', 'value']
    """
    heads: dict[str, Any] = {f"logit_{a}": ("logits", i) for i, a in enumerate(ACTIONS)}
    heads["value"] = "state_value"
    return heads


def play_and_attribute(
    agent: Any,
    *,
    movies: int = 2,
    max_frames: int = 120,
    radius: float = 1.0,
    stride: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> list[TensorDictBase]:
    """Plays one episode in each of ``movies`` batched games (game ``i`` seeded ``seed + i``),
    the agent taking its most probable action, with Greydanus saliency at every step.

    Returns:
        one trajectory ``[T]`` per game, until the ball is lost or ``max_frames`` steps:
        ``observation``, ``action``, ``logits``, ``state_value``, ``("next", "reward")`` and
        ``("attribution", head, "observation")`` for each of :func:`greydanus_heads` (the
        map repeated over the 4 channels), plus ``policy_map`` and ``value_map`` ``[T, 10,
        10]``.

    Examples:
        >>> from tdhook_rl import agents
        >>> [episode] = play_and_attribute(agents.load("breakout"), movies=1, max_frames=5)
        >>> episode["policy_map"].shape
        torch.Size([5, 10, 10])
    """
    from tdhook_rl.envs.minatar import MinAtarEnv

    method = PerturbationSaliency(radius=radius, stride=stride, sigma=BLUR_SIGMA)
    explained = Attributed(agent, method, inputs=["observation"], targets=greydanus_heads())
    env = MinAtarEnv("breakout", batch_size=[movies], max_steps=max_frames, device=device)
    env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(max_frames, explained, break_when_any_done=False)
    episodes = []
    for g in range(movies):
        done = rollout["next", "done"][g].squeeze(-1)
        length = int(done.float().argmax()) + 1 if bool(done.any()) else max_frames
        ep = rollout[g, :length].select(*KEEP, ("next", "reward")).cpu()
        logits = [ep["attribution", f"logit_{a}", "observation"][:, 0] for a in ACTIONS]
        ep["policy_map"] = torch.stack(logits).sum(0)  # 1/2 ||logits(I) - logits(I')||^2
        ep["value_map"] = ep["attribution", "value", "observation"][:, 0]
        episodes.append(ep)
    return episodes


def _stills(agent: Any, frames: torch.Tensor, method: Any) -> dict[str, torch.Tensor]:
    """Occlusion and ``method`` maps ``[N, 10, 10]`` of the policy and the value on
    ``frames``."""
    from tensordict import TensorDict

    c = frames.shape[-3]
    occlusion = Occlusion(window=(c, 1, 1), strides=(c, 1, 1))
    out = {}
    for name, m in (("occlusion", occlusion), (_method_name(method), method)):
        explained = Attributed(agent, m, inputs=["observation"], targets=STILL_HEADS)
        td = TensorDict(observation=frames.clone(), batch_size=[frames.shape[0]])
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            td = explained(td)
        for head in STILL_HEADS:
            out[f"{name}\n{head}"] = td["attribution", head, "observation"].sum(-3)
    return out


def _method_name(method: Any) -> str:
    return type(method).__name__


def _embed_gif(report: ReportWriter, path: Path, caption: str) -> None:
    # the writer embeds PNG figures only; a GIF joins the page the same way (base64), and
    # lies in the staging folder so that the report's marker lists it
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    report._parts.append(
        f'<figure><img src="data:image/gif;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)} ({path.name})</figcaption></figure>"
    )


def _captions(ep: TensorDictBase) -> list[str]:
    score = ep["next", "reward"].squeeze(-1).cumsum(0)
    return [
        f"step {t + 1}: {ACTIONS[int(ep['action'][t])]}, V = {float(ep['state_value'][t]):.2f},"
        f" score {int(score[t])}"
        for t in range(ep.shape[0])
    ]


def explain_breakout(
    agent: Any, out_dir: str | Path, opts: BreakoutOptions, *, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Plays, attributes and writes a report folder (``report.html``, ``movie_<n>.gif`` and
    ``movie_<n>.npz`` per episode, ``stills.png``, ``summary.json``).

    Args:
        agent: the Breakout agent (``tdhook_rl.agents.load("breakout")``).
        out_dir: the report folder (replaced once complete; nothing is left on failure).
        opts: the options.
        progress: show progress bars.

    Returns:
        The report folder and the summary numbers.

    Examples:
        >>> import tempfile
        >>> from tdhook_rl import agents
        >>> path, summary = explain_breakout(
        ...     agents.load("breakout"), tempfile.mkdtemp() + "/report",
        ...     BreakoutOptions(method="saliency", movies=1, max_frames=6, stills=2),
        ...     progress=False)
        >>> sorted(p.name for p in path.iterdir())[1:]
        ['movie_1.gif', 'movie_1.npz', 'report.html', 'stills.png', 'summary.json']
    """
    from tdhook_rl.envs.minatar import BREAKOUT_CHANNELS
    from tdhook_rl.viz.movies import channel_colors, saliency_movie, saliency_stills

    start = time.perf_counter()
    torch.manual_seed(opts.seed)
    report = ReportWriter(out_dir, "tdhook-rl: where the Breakout agent looks", logger=opts.logger)
    try:
        bar = tqdm(total=4, desc="explain breakout", disable=not progress, unit="stage")
        bar.set_postfix_str(f"{opts.movies} episodes")
        episodes = play_and_attribute(
            agent,
            movies=opts.movies,
            max_frames=opts.max_frames,
            radius=opts.radius,
            stride=opts.stride,
            seed=opts.seed,
            device=opts.device,
        )
        bar.update()
        colors = channel_colors(len(BREAKOUT_CHANNELS))
        games = []
        for g, ep in enumerate(episodes, start=1):
            reward = ep["next", "reward"].squeeze(-1)
            games.append(
                {
                    "game": g,
                    "seed": opts.seed + g - 1,
                    "steps": ep.shape[0],
                    "score": int(reward.sum()),
                    "ended": "step cap" if ep.shape[0] == opts.max_frames else "ball lost",
                    "actions": {a: int((ep["action"] == i).sum()) for i, a in enumerate(ACTIONS)},
                    "mean_value": float(ep["state_value"].mean()),
                }
            )
        report.section(
            "Episodes",
            "The agent takes its most probable action at every step (sticky actions 0.1, as "
            f"in MinAtar); game n is seeded {opts.seed} + n - 1 and stops when the ball is "
            f"lost or after {opts.max_frames} steps.",
        )
        report.table(
            ["game", "steps", "score", "ended", "noop / left / right", "mean V"],
            [
                [
                    r["game"],
                    r["steps"],
                    r["score"],
                    r["ended"],
                    " / ".join(str(v) for v in r["actions"].values()),
                    r["mean_value"],
                ]
                for r in games
            ],
        )
        report.section(
            "Saliency movies (Greydanus et al., 2018)",
            "Left: the frame (paddle, ball, trail: where the ball was a step before, bricks). "
            "Middle: policy saliency, 1/2 ||logits(I) - logits(I')||^2 when a Gaussian blob "
            f"(std {opts.radius} px, every {opts.stride} px) of the frame is blurred (sigma "
            f"{BLUR_SIGMA} px): where a change of the frame would change the action. Right: "
            "value saliency, 1/2 (V(I) - V(I'))^2. Each map keeps one scale over its movie "
            "(full colour at the 90th percentile of its per-frame peaks; brighter frames "
            "saturate). movie_n.npz holds the frames and the maps.",
        )
        bar.set_postfix_str("movies")
        tmp = report._tmp  # files written here are published (and listed) with the report
        for g, ep in enumerate(episodes, start=1):
            gif = tmp / f"movie_{g}.gif"
            saliency_movie(
                ep["observation"],
                {"policy": ep["policy_map"], "value": ep["value_map"]},
                gif,
                captions=_captions(ep),
                colors=colors,
                channel_names=BREAKOUT_CHANNELS,
                title=f"Breakout, game {g}",
                progress=progress,
            )
            np.savez_compressed(
                tmp / f"movie_{g}.npz",
                frames=ep["observation"].numpy(),
                policy=ep["policy_map"].numpy(),
                value=ep["value_map"].numpy(),
                actions=ep["action"].numpy(),
            )
            _embed_gif(report, gif, f"Game {g}: {games[g - 1]['score']} bricks")
        bar.update()
        bar.set_postfix_str("stills")
        method = attribution_method(opts.method, opts.n_steps)
        first = episodes[0]
        picked = torch.linspace(0, first.shape[0] - 1, min(opts.stills, first.shape[0]))
        picked = picked.round().long().unique()
        frames = first["observation"][picked]
        maps = _stills(agent, frames, method)
        columns: dict[str, tuple[torch.Tensor, bool]] = {
            "Greydanus\npolicy": (first["policy_map"][picked], False),
            "Greydanus\nvalue": (first["value_map"][picked], False),
        }
        columns.update({k: (v, True) for k, v in maps.items()})
        labels = [f"step {int(t) + 1}: {ACTIONS[int(first['action'][t])]}" for t in picked]
        fig = saliency_stills(frames, columns, row_labels=labels, colors=colors)
        report.section(
            "Methods side by side",
            f"Frames of game 1. Greydanus maps as in the movie (magnitudes); occlusion: "
            "log pi(action) or V at the frame minus with one pixel emptied in all channels; "
            f"{_method_name(method)}: of the same targets, summed over the channels. Red "
            "raises the target, blue lowers it; one scale per column.",
        )
        report.figure(fig, "stills", "Greydanus, occlusion and gradient maps of the same frames")
        bar.update()
        stills = []
        for i, t in enumerate(picked.tolist()):
            row = {"game": 1, "step": t + 1, "action": ACTIONS[int(first["action"][t])]}
            row["top_pixels"] = {
                name.replace("\n", ": "): [
                    {"pixel": p, "attribution": v} for p, v in top_entries(m[i], PIXELS, 3)
                ]
                for name, (m, _) in columns.items()
            }
            stills.append(row)
        summary: dict[str, Any] = {
            "agent": "breakout",
            "movie_method": repr(PerturbationSaliency(opts.radius, opts.stride, BLUR_SIGMA)),
            "method": repr(method),
            "games": games,
            "movies": [f"movie_{g}.gif" for g in range(1, len(episodes) + 1)],
            "stills": stills,
        }
        what = f"{len(episodes)} episodes, {sum(r['steps'] for r in games)} frames"
        return finish(report, summary, start, what, bar), summary
    except BaseException:
        report.discard()
        raise


def summary_line(path: Path, summary: dict[str, Any]) -> str:
    """The one line ``tdhook-rl explain --agent breakout`` prints at the end."""
    scores = ", ".join(str(g["score"]) for g in summary["games"])
    return (
        f"report: {path / 'report.html'} | {len(summary['games'])} episodes, scores {scores} | "
        f"{len(summary['movies'])} saliency movies | {summary['wall_seconds']:.0f} s"
    )
