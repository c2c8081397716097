"""Board heatmaps: the per-square reduction against a slow loop over squares, and figures that
draw what they are given (pieces, discs, the move, one centred scale per row)."""

from __future__ import annotations

import pytest
import torch

from tdhook_rl import viz

chess = pytest.importorskip("chess", reason="python-chess is not installed (tdhook-rl[chess])")

from tdhook_rl.envs.chess import square_to_cell  # noqa: E402

FENS = [
    "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
    "7k/1p6/p4n1P/2pp4/3p2p1/PP1P1P1R/2P1r3/1R5K w - - 0 35",
]


def slow_square_map(attribution: torch.Tensor, white: bool) -> torch.Tensor:
    """out[rank, file]: the planes' sum at the cell holding that square, one square at a time."""
    out = torch.zeros(8, 8)
    for square in range(64):
        cell = square_to_cell(square, white)
        out[square // 8, square % 8] = sum(
            float(attribution[p, cell // 8, cell % 8]) for p in range(attribution.shape[0])
        )
    return out


def test_chess_square_map_matches_a_slow_loop():
    attribution = torch.randn(5, 18, 8, 8)
    white = torch.tensor([True, False, True, False, False])
    fast = viz.chess_square_map(attribution, white)
    assert fast.shape == (5, 8, 8)
    for i in range(5):
        expected = slow_square_map(attribution[i], bool(white[i]))
        torch.testing.assert_close(fast[i], expected, rtol=1e-5, atol=1e-5)
        single = viz.chess_square_map(attribution[i], bool(white[i]))
        torch.testing.assert_close(single, expected, rtol=1e-5, atol=1e-5)


def test_chess_square_map_puts_the_pieces_on_their_squares():
    from tdhook_rl.envs.chess import fen_to_planes

    for fen in FENS:
        board = chess.Board(fen)
        planes = fen_to_planes(fen)
        # the side to move's pieces, summed over its six planes, land on its pieces' squares
        own = viz.chess_square_map(planes[:6], board.turn)
        expected = torch.zeros(8, 8)
        for square in chess.SquareSet(board.occupied_co[board.turn]):
            expected[chess.square_rank(square), chess.square_file(square)] = 1
        torch.testing.assert_close(own, expected)


def test_chess_square_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[\.\.\., planes, 8, 8\]"):
        viz.chess_square_map(torch.zeros(18, 7, 8), True)
    with pytest.raises(ValueError, match="white_to_move has shape"):
        viz.chess_square_map(torch.zeros(3, 18, 8, 8), torch.tensor([True, False]))


def board_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_chess_heatmaps_draw_pieces_moves_and_one_centred_scale_per_row(tmp_path):
    maps = {"move": torch.randn(2, 8, 8), "win probability": 3 * torch.randn(2, 8, 8)}
    fig = viz.chess_heatmaps(
        FENS,
        maps,
        ["e7e5", "h3g3"],
        row_labels=["1. Black to move", "2. White to move"],
        scale="row",
    )
    boards = board_axes(fig)
    assert len(boards) == 4
    assert [ax.get_title() for ax in boards[:2]] == ["move", "win probability"]
    colorbars = [ax for ax in fig.axes if ax not in boards]
    assert len(colorbars) == 2 and all(cb.get_ylabel() for cb in colorbars)
    for row in range(2):
        limits = {boards[2 * row + j].images[0].get_clim() for j in range(2)}
        expected = max(float(m[row].abs().max()) for m in maps.values())
        assert limits == {(-expected, expected)}  # shared by both heads, centred at 0
    for ax, fen in zip(boards, [FENS[0], FENS[0], FENS[1], FENS[1]], strict=True):
        glyphs = [t for t in ax.texts if t.get_text()]
        assert len(glyphs) == len(chess.Board(fen).piece_map())
        assert [t.get_text() for t in ax.get_xticklabels()] == list("abcdefgh")
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(r) for r in range(1, 9)]
    # the move is an arrow from its source square to its target (file, rank)
    arrow = next(c for c in boards[2].get_children() if type(c).__name__ == "Annotation")
    assert arrow.xy == (6, 2) and arrow.xyann == (7, 2)  # h3 -> g3
    glyph_at = {t.get_position(): t for t in boards[0].texts}
    white_king, black_queen = glyph_at[(4, 0)], glyph_at[(3, 7)]
    assert white_king.get_text() == "\u265a" and white_king.get_color() == "white"
    assert black_queen.get_text() == "\u265b" and black_queen.get_color() == "black"
    fig.savefig(tmp_path / "boards.png")
    assert (tmp_path / "boards.png").stat().st_size > 10_000


def test_each_board_has_its_own_printed_scale_by_default():
    # the value head's attributions are 1000x smaller than the move's: a shared scale blanked it
    maps = {"move": torch.randn(2, 8, 8), "value": 1e-3 * torch.randn(2, 8, 8)}
    fig = viz.chess_heatmaps(FENS, maps)
    boards = board_axes(fig)
    for i, ax in enumerate(boards):
        row, head = divmod(i, 2)
        top = float(maps[["move", "value"][head]][row].abs().max())
        assert ax.images[0].get_clim() == pytest.approx((-top, top))
        assert ax.get_title().endswith(f"scale ±{top:.2g}")
    assert len(fig.axes) == 8  # a colour bar per board


def test_a_near_zero_board_is_drawn_on_its_heads_scale_and_says_so():
    value = torch.randn(2, 6, 7)
    value[1] *= 1e-7  # e.g. a move played with P = 1.00 at both ends of the IG path
    fig = viz.connect_four_heatmaps(
        torch.zeros(2, 6, 7), {"move": torch.randn(2, 6, 7), "value": value}, [3, 3]
    )
    grids = board_axes(fig)
    top = float(value.abs().max())
    assert grids[3].images[0].get_clim() == pytest.approx((-top, top))  # not its own noise
    assert "near zero" in grids[3].get_title() and "near zero" not in grids[1].get_title()


def test_figure_scale_is_shared_by_every_board():
    maps = {"move": torch.randn(2, 8, 8), "value": torch.randn(2, 8, 8)}
    fig = viz.chess_heatmaps(FENS, maps, scale="figure")
    limits = {ax.images[0].get_clim() for ax in board_axes(fig)}
    top = max(float(m.abs().max()) for m in maps.values())
    assert limits == {(-top, top)}
    assert len(fig.axes) == 5  # four boards, one colour bar


def test_connect_four_heatmaps_draw_discs_and_the_column():
    from matplotlib.patches import Circle

    boards = torch.zeros(2, 6, 7, dtype=torch.int8)
    boards[1, 5, 3], boards[1, 5, 4], boards[1, 4, 3] = 1, -1, 1
    maps = {"move": torch.randn(2, 6, 7), "value": torch.randn(2, 6, 7)}
    fig = viz.connect_four_heatmaps(boards, maps, [3, 3])
    grids = board_axes(fig)
    assert len(grids) == 4
    for ax, board in zip(grids, [boards[0], boards[0], boards[1], boards[1]], strict=True):
        discs = [p for p in ax.patches if isinstance(p, Circle) and p.get_fill()]
        assert len(discs) == int((board != 0).sum())
        rings = [p for p in ax.patches if isinstance(p, Circle) and not p.get_fill()]
        landing = max(r for r in range(6) if board[r, 3] == 0)
        assert [ring.center for ring in rings] == [(3, landing)]
    dark = [p for p in grids[2].patches if p.get_fill() and p.get_facecolor()[0] < 0.5]
    assert sorted(p.center for p in dark) == [(3, 4), (3, 5)]  # the first player's discs


def test_bad_figure_input():
    with pytest.raises(ValueError, match="8 ranks"):
        viz.chess_heatmaps(["8/8 w - - 0 1"], {"move": torch.zeros(1, 8, 8)})
    with pytest.raises(ValueError, match="has 1 rows; expected 2"):
        viz.chess_heatmaps(FENS, {"move": torch.zeros(1, 8, 8)})
    with pytest.raises(ValueError, match="1 moves for 2 positions"):
        viz.chess_heatmaps(FENS, {"move": torch.zeros(2, 8, 8)}, ["e2e4"])
    with pytest.raises(ValueError, match="expected values of shape"):
        viz.connect_four_heatmaps(torch.zeros(1, 6, 7), {"move": torch.zeros(1, 8, 8)})
