"""``tdhook-rl explain --agent breakout`` on a short setting: the folder holds one GIF per
episode (one frame per step), the maps behind each movie are Attributed(PerturbationSaliency)
of its frames, and those agree with a slow per-placement loop written from Greydanus et al."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

import tdhook_rl as thr
from tdhook_rl import agents
from tdhook_rl.attribution import PerturbationSaliency
from tdhook_rl.cli import main
from tdhook_rl.report.breakout import BLUR_SIGMA, greydanus_heads

SMALL = ["--agent", "breakout", "--movies", "2", "--max-frames", "12", "--stills", "2"]
SMALL += ["--method", "saliency", "--quiet"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("breakout") / "report"
    assert main(["explain", "--out", str(out), *SMALL]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_folder_and_summary(report):
    out, summary = report
    assert sorted(p.name for p in out.iterdir()) == [
        ".tdhook-rl-report",
        "movie_1.gif",
        "movie_1.npz",
        "movie_2.gif",
        "movie_2.npz",
        "report.html",
        "stills.png",
        "summary.json",
    ]
    assert summary["agent"] == "breakout" and len(summary["games"]) == 2
    assert [g["seed"] for g in summary["games"]] == [0, 1]
    assert all(1 <= g["steps"] <= 12 for g in summary["games"])
    assert len(summary["stills"]) == 2
    assert "data:image/gif;base64," in (out / "report.html").read_text()


def test_gif_has_one_frame_per_step(report):
    out, summary = report
    for g, game in enumerate(summary["games"], start=1):
        gif = Image.open(out / f"movie_{g}.gif")
        assert gif.n_frames == game["steps"]
        assert gif.size == (3 * 2.2 * 80, (2.2 + 0.8) * 80)  # frame, policy and value panels


def test_movie_maps_are_perturbation_saliency_of_its_frames(report):
    out, _summary = report
    agent = agents.load("breakout")
    method = PerturbationSaliency(radius=1, stride=1, sigma=BLUR_SIGMA)
    explained = thr.Attributed(agent, method, inputs=["observation"], targets=greydanus_heads())
    for g in (1, 2):
        saved = np.load(out / f"movie_{g}.npz")
        frames = torch.as_tensor(saved["frames"])
        td = TensorDict(observation=frames, batch_size=[frames.shape[0]])
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            td = explained(td)
        logits = ["logit_noop", "logit_left", "logit_right"]
        policy = sum(td["attribution", k, "observation"][:, 0] for k in logits)
        value = td["attribution", "value", "observation"][:, 0]
        torch.testing.assert_close(torch.as_tensor(saved["policy"]), policy)
        torch.testing.assert_close(torch.as_tensor(saved["value"]), value)
        assert saved["actions"].tolist() == td["action"].tolist()


def test_greydanus_against_a_slow_loop(report):
    """Greydanus et al., eq. 2-3: I' = I (1 - M) + blur(I) M with M a Gaussian of std r at
    (i, j) (peak 1); S(i, j) = 1/2 ||L(I) - L(I')||^2 over the logits, and the same for V."""
    out, _ = report
    agent = agents.load("breakout")
    frames = torch.as_tensor(np.load(out / "movie_1.npz")["frames"][:3])
    saved = np.load(out / "movie_1.npz")
    yy, xx = np.mgrid[0:10, 0:10]
    trunk, policy_head, value_head = agent.module
    with torch.no_grad():

        def heads(x):
            td = trunk(TensorDict(observation=x, batch_size=x.shape[:1]))
            return policy_head.module[0](td)["logits"], value_head(td)["state_value"][:, 0]

        for n, frame in enumerate(frames):
            image = frame.numpy()
            blurred = np.stack([gaussian_filter(c, BLUR_SIGMA, mode="nearest") for c in image])
            logits, value = heads(frame[None])
            for i in range(10):
                for j in range(10):
                    mask = np.exp(-((yy - i) ** 2 + (xx - j) ** 2) / 2.0)
                    perturbed = image * (1 - mask) + blurred * mask
                    lp, vp = heads(torch.as_tensor(perturbed, dtype=torch.float32)[None])
                    s_policy = 0.5 * float(((logits - lp) ** 2).sum())
                    s_value = 0.5 * float((value - vp) ** 2)
                    assert saved["policy"][n, i, j] == pytest.approx(s_policy, rel=1e-4, abs=1e-6)
                    assert saved["value"][n, i, j] == pytest.approx(s_value, rel=1e-4, abs=1e-6)


def test_other_agents_options_are_refused(capsys, tmp_path):
    assert main(["explain", "--agent", "breakout", "--games", "2", "--out", str(tmp_path)]) == 2
    assert "--games does not apply to --agent breakout" in capsys.readouterr().err
