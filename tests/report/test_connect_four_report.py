"""``tdhook-rl explain --agent connect_four`` on a reduced budget: the games in the summary are
real games (each move legal, each position follows from the previous one), the attributions
agree with captum, and ``--logger csv`` logs the summary's scalars into the report folder."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdhook_rl import agents
from tdhook_rl.attributed import Attributed
from tdhook_rl.cli import main
from tdhook_rl.envs.connect_four import observation_from_board

captum_attr = pytest.importorskip("captum.attr")

N_STEPS = 4
C4_SMALL = [
    "--agent",
    "connect_four",
    "--games",
    "3",
    "--positions",
    "3",
    "--n-steps",
    str(N_STEPS),
    "--quiet",
]


DRAWN: list[dict] = []  # the panels of each game's figure, as the report drew them


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from tdhook_rl import viz

    out = tmp_path_factory.mktemp("connect_four") / "report"
    draw = viz.connect_four_heatmaps

    def recorded(boards, maps, *args, **kwargs):
        DRAWN.append({"boards": boards, "maps": maps})
        return draw(boards, maps, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(viz, "connect_four_heatmaps", recorded)
        assert main(["explain", "--out", str(out), *C4_SMALL, "--logger", "csv"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_report_folder_and_summary(report):
    out, summary = report
    assert sorted(p.name for p in out.iterdir()) == [
        ".tdhook-rl-report",  # the marker that lets a later run replace this report
        "game_1.png",
        "game_2.png",
        "game_3.png",
        "logs",
        "report.html",
        "summary.json",
    ]
    assert summary["agent"] == "connect_four" and len(summary["games"]) == 3
    assert summary["wins"] + summary["draws"] + summary["losses"] == 3
    assert summary["n_moves"] == len(summary["moves"])
    for move in summary["moves"]:
        assert set(move) >= {
            "game",
            "ply",
            "column",
            "move_prob",
            "p_win",
            "value",
            "completeness_delta",
            "top_cells",
            "cell_map",
            "board",
        }
        for head in ("move", "value"):
            cells = torch.tensor(move["cell_map"][head])
            assert cells.shape == (6, 7)
            assert move["attribution_sum"][head] == pytest.approx(float(cells.sum()), abs=1e-5)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3


def test_the_games_are_played_by_the_rules(report):
    _, summary = report
    for game in summary["games"]:
        moves = [m for m in summary["moves"] if m["game"] == game["game"]]
        first = game["agent_plays"] == "first"
        assert [m["ply"] for m in moves] == list(range(1 if first else 2, game["plies"] + 1, 2))
        stone = 1 if first else -1
        for move, after in itertools.pairwise(moves):
            board, nxt = torch.tensor(move["board"]), torch.tensor(after["board"])
            assert board[0, move["column"]] == 0  # a legal column
            landing = max(r for r in range(6) if board[r, move["column"]] == 0)
            assert nxt[landing, move["column"]] == stone  # the agent's disc is where it fell
            assert int((nxt != 0).sum()) == int((board != 0).sum()) + 2  # and one reply
            assert ((nxt != board) <= (board == 0)).all()  # no disc moves or disappears


def test_attributions_agree_with_captum(report):
    _, summary = report
    agent = agents.load("connect_four")
    boards = torch.tensor([m["board"] for m in summary["moves"]], dtype=torch.int8)
    players = (boards != 0).flatten(1).sum(-1, keepdim=True) % 2  # who is to move
    obs = observation_from_board(boards, players)
    mask = boards[:, 0] == 0
    actions = torch.tensor([m["column"] for m in summary["moves"]])

    def forward(x):
        out = agent(
            TensorDict(observation=x, action_mask=mask.repeat(N_STEPS, 1), batch_size=x.shape[:1])
        )
        log_probs = out["logits"].masked_fill(~out["action_mask"], float("-inf")).log_softmax(-1)
        move = log_probs.gather(-1, actions.repeat(N_STEPS)[:, None]).squeeze(-1)
        return torch.stack([move, out["state_value"].squeeze(-1)], -1)

    ig = captum_attr.IntegratedGradients(forward)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for column, head in enumerate(("move", "value")):
            expected = ig.attribute(obs, target=column, n_steps=N_STEPS, method="gausslegendre")
            ours = torch.tensor([m["cell_map"][head] for m in summary["moves"]])
            torch.testing.assert_close(ours, expected.sum(1), rtol=1e-3, atol=1e-5)


def test_csv_logger_writes_the_summary_scalars(report):
    out, summary = report
    scalars = out / "logs" / "explain" / "scalars"
    assert (scalars / "wins.csv").read_text() == f"0,{float(summary['wins'])}\n"
    lines = (scalars / "moves" / "p_win.csv").read_text().splitlines()
    assert [line.split(",") for line in lines] == [
        [str(step), str(move["p_win"])] for step, move in enumerate(summary["moves"])
    ]
    assert (scalars / "moves" / "completeness_delta" / "value.csv").exists()
    assert not (scalars / "moves" / "cell_map").exists()  # board maps stay in summary.json


def test_gradcam_panels_beside_ig_are_gradcam_of_the_same_positions(report):
    """Each figure has a GradCAM panel beside each head's IG map; it is
    Attributed(GradCAM) at the last conv layer on that position, and captum's LayerGradCam
    (one call per head) upsampled to the board."""
    from tdhook_rl.attribution import GradCAM
    from tdhook_rl.report.connect_four import GRADCAM_SITE, HEADS

    _, summary = report
    agent = agents.load("connect_four")
    assert len(DRAWN) == len(summary["games"])
    explained = Attributed(agent, GradCAM(size=(6, 7)), inputs=[GRADCAM_SITE], targets=HEADS)
    layer = agent.get_submodule(GRADCAM_SITE)
    for figure in DRAWN:
        assert list(figure["maps"]) == [
            "move (IG)",
            "move (GradCAM)",
            "win probability (IG)",
            "win probability (GradCAM)",
        ]
        boards = torch.as_tensor(figure["boards"])
        players = (boards != 0).flatten(1).sum(-1, keepdim=True) % 2  # who is to move
        td = TensorDict(
            observation=observation_from_board(boards, players),
            action_mask=boards[:, 0] == 0,
            batch_size=boards.shape[:1],
        )
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            want = explained(td)
        for head, column in (("move", "move"), ("value", "win probability")):
            drawn = torch.as_tensor(figure["maps"][f"{column} (GradCAM)"])
            torch.testing.assert_close(drawn, want["attribution", head, GRADCAM_SITE])

        # the same for the value head, from captum: LayerGradCam at the conv, upsampled
        def value(x, mask=td["action_mask"]):
            return agent(TensorDict(observation=x, action_mask=mask, batch_size=x.shape[:1]))[
                "state_value"
            ]

        cam = captum_attr.LayerGradCam(value, layer).attribute(
            td["observation"], relu_attributions=True
        )
        up = captum_attr.LayerAttribution.interpolate(cam, (6, 7), "bilinear")[:, 0]
        drawn = torch.as_tensor(figure["maps"]["win probability (GradCAM)"])
        torch.testing.assert_close(drawn, up, atol=1e-6, rtol=1e-4)
        assert (drawn >= 0).all() and drawn.abs().sum() > 0
    move = summary["moves"][-1]  # the maps are in the summary too
    assert torch.tensor(move["gradcam_map"]["value"]).shape == (6, 7)
