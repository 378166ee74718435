import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cpmc_lib import diagrams, plots
from cpmc_lib.components import ORIGIN_NAMES
from cpmc_lib.io import voc_palette


def test_colorize_uses_voc_palette():
    mask = np.array([[0, 1], [15, 255]])
    rgb = plots.colorize(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[1, 0], voc_palette()[15])
    np.testing.assert_array_equal(rgb[1, 1], voc_palette()[255])


def test_overlay_cam_blends_towards_heat():
    img = torch.zeros(3, 4, 4, dtype=torch.uint8)
    cam = np.zeros((4, 4), dtype=np.float32)
    cam[0, 0] = 1.0
    out = plots.overlay_cam(img, cam, alpha=0.5)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > out[3, 3, 0]  # jet is red at 1, blue at 0


def test_figures_have_expected_panels():
    sample = {
        "name": "a",
        "img": torch.zeros(3, 8, 8, dtype=torch.uint8),
        "mask": torch.zeros(8, 8, dtype=torch.int64),
        "label": torch.tensor([1.0, 0.0]),
        "diag": torch.zeros(8, 8, dtype=torch.int64),
    }
    fig = plots.plot_samples([sample, sample], ["background", "x", "y"], {0: "neutral", 255: "border"})
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    # one legend: the mask colours of the classes shown, then the diagnostic codes
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "(0) neutral", "(255) border"]
    fig = plots.plot_history([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}], ["loss"])
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1
    fig = plots.plot_history([{"epoch": e, "loss": 1.0 / e} for e in range(1, 11)], ["loss"])
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    fig = plots.plot_curves({"cam": [[0.1, 10], [0.2, 30], [0.3, 20]]}, "threshold", "mIoU")
    best = fig.axes[0].lines[1]
    assert best.get_xdata()[0] == 0.2
    # epochs: whole-number ticks only
    fig = plots.plot_curves({"net": [[1, 50.0], [2, 60.0], [3, 65.0], [4, 66.0], [5, 66.5]]}, "epoch", "mIoU")
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    fig = plots.plot_bars({"a": [1, 2], "b": [3, 4]}, ["c1", "c2"], "IoU")
    assert len(fig.axes[0].patches) == 4


def test_at_a_glance_draws_the_chosen_image_with_its_mask():
    samples = [
        {
            "name": n,
            "img": torch.zeros(3, 8, 8, dtype=torch.uint8),
            "mask": torch.zeros(8, 8, dtype=torch.int64),
        }
        for n in ("first", "second")
    ]
    maps = torch.rand(2, 3, 4, 4)
    fn, fp = torch.zeros(2, 3, 4, 4, dtype=torch.bool), torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    steps = {"cam": maps, "refined": maps, "proto": maps, "cpmc": maps, "fn": fn, "fp": fp}
    fig = plots.plot_at_a_glance(samples, steps, index=1, pred=np.ones((8, 8), np.int64), pred_title="CPMC mask @ 0.30",
                                 class_names=["bg", "a", "b"], note="x")
    titles = [ax.get_title() for ax in fig.axes]
    assert "second" in fig.get_suptitle() and "CPMC mask @ 0.30" in titles
    # 8 panels, plus the colour bar
    assert sum(1 for ax in fig.axes if ax.images) == 8 and len(fig.legends) == 1


def test_median_index_is_the_median_gain():
    assert plots.median_index([5.0, -1.0, 2.0, 9.0, 0.0]) == 2
    assert plots.median_index([float("nan"), 3.0, 1.0]) == 2


def test_image_grids_wrap_to_equal_lines_and_keep_panels_readable():
    img = np.zeros((8, 8, 3), np.uint8)
    for n, lines in ((6, 3), (4, 2), (3, 2), (5, 3)):  # at most MAX_COLS (two) a line
        fig = plots.plot_image_grid([[img] * n], [[f"t{i}" for i in range(n)]], colorbar="value")
        FigureCanvasAgg(fig).draw()  # the constrained layout places the panels
        panels = [ax for ax in fig.axes if ax.images]
        assert len(panels) == n
        assert len({round(ax.get_position().y0, 3) for ax in panels}) == lines
        assert fig.get_figwidth() <= plots.COLUMN_IN + 1e-6
        assert all(ax.title.get_fontsize() >= 9 for ax in panels)
        # each panel 250 px or more at the book's 100 dpi (the column's width over MAX_COLS)
        assert min(ax.get_position().width for ax in panels) * fig.get_figwidth() * 100 >= 250


def test_deltas_are_drawn_against_the_reference_with_spread():
    rows = [
        {"variant": "ref", "miou": 50.0, "miou_folds": [49.0, 51.0, 50.0]},
        {"variant": "better", "miou": 53.0, "miou_folds": [52.0, 54.0, 53.0]},
        {"variant": "worse", "miou": 48.0, "miou_folds": [47.0, 50.0, 47.0]},
    ]
    fig = plots.plot_deltas(rows, "ref")
    widths = sorted(round(p.get_width(), 6) for p in fig.axes[0].patches)
    assert widths == [-2.0, 3.0]


def test_pipeline_diagram_follows_the_components_and_the_committed_copy_is_current(tmp_path):
    from matplotlib.image import imread

    from cpmc_lib.book.build import ROOT, write_figures
    from cpmc_lib.components import COMPONENTS

    fig = diagrams.plot_pipeline()
    texts = {t.get_text().replace("\n", " ") for t in fig.axes[0].texts}
    named = {s for row in diagrams.PIPELINE_ROWS for s in row if isinstance(s, str)}
    assert named <= {c.name for c in COMPONENTS} and named <= texts  # every box is a declared component
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert legend == {ORIGIN_NAMES[c.origin] for c in COMPONENTS if c.name in named}
    for fresh in write_figures(tmp_path):
        committed = ROOT / "book" / "_static" / fresh.name  # python -m cpmc_lib.book figures refreshes them
        assert imread(committed).shape == imread(fresh).shape


def test_calibration_regions_figure_splits_the_extra_cells_by_attachment():
    l_c, l_p = diagrams.toy_labels()
    fig = diagrams.plot_calibration_regions()
    fn_fp = np.asarray(fig.axes[3].images[0].get_array())  # the last panel: FN green, FP red
    green, red = (fn_fp == [0, 170, 0]).all(-1), (fn_fp == [220, 0, 0]).all(-1)
    body = ((l_p == 1) & (l_c == 0)).numpy()
    assert green.sum() > 0 and (green == (body & (np.arange(12)[:, None] >= 5))).all()  # the body round the part
    assert red[1:4, 8:11].all() and red[6, 2] and red.sum() == 10  # the look-alike and the classifier's own cell


def test_mask_colours_follow_colour_named_classes_and_stay_voc_otherwise():
    from cpmc_lib.io import voc_palette

    synth = ["background", "red-disc", "white-triangle", "black-disc"]
    pal = plots.mask_palette(synth)
    assert pal[1].tolist() == [255, 0, 0] and pal[2].tolist() == [255, 255, 255] and pal[3].tolist() == [0, 0, 0]
    assert pal[0].tolist() == [128, 128, 128] and pal[255].tolist() == voc_palette()[255].tolist()
    voc = ["background", "aeroplane", "bicycle"]
    assert (plots.mask_palette(voc) == voc_palette()).all() and (plots.mask_palette() == voc_palette()).all()
    assert (plots.mask_palette(["background", "red-disc", "red-square"]) == voc_palette()).all()  # not distinct
    mask = np.array([[0, 2], [255, 1]])
    assert plots.colorize(mask, synth)[0, 1].tolist() == [255, 255, 255]
    fig = plots.plot_image_grid([[plots.colorize(mask, synth)]], legend=(synth, [0, 2, 255]))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "white-triangle", "ignored"]


def test_legend_stays_inside_the_figure():
    names = ["background", "blue-triangle", "magenta-square", "black-disc", "white-triangle", "orange-disc"]
    image = np.zeros((8, 8, 3), np.uint8)
    fig = plots.plot_image_grid([[image] * 4], legend=(names, [0, 1, 2, 3, 4, 5, 255]))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box, width = fig.legends[0].get_window_extent(canvas.get_renderer()), fig.bbox.width
    assert box.x0 >= 0 and box.x1 <= width  # wrapped onto more rows, not cut at the page edge
    # a long legend gets its own room: the panels keep the size they have without one
    plain = plots.plot_image_grid([[image] * 4])
    FigureCanvasAgg(plain).draw()
    sizes = [min(ax.get_position().width * f.get_figwidth(), ax.get_position().height * f.get_figheight())
             for f in (fig, plain) for ax in f.axes if ax.images][::4]
    assert sizes[0] >= 0.9 * sizes[1], sizes


def test_columns_put_each_image_in_a_column_and_each_kind_in_a_row():
    panels = [[np.full((8, 8, 3), 10 * i + r, np.uint8) for r in range(4)] for i in range(5)]
    fig = plots.plot_columns(panels, ["image", "truth", "label", "+ CRF"], [f"n{i}" for i in range(5)])
    FigureCanvasAgg(fig).draw()
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4 * plots.MAX_COLS  # images past MAX_COLS are left out
    first_row = sorted(axes, key=lambda ax: (-round(ax.get_position().y0, 3), ax.get_position().x0))[: plots.MAX_COLS]
    assert [ax.get_title() for ax in first_row] == [f"n{i}" for i in range(plots.MAX_COLS)]
    assert [int(ax.images[0].get_array()[0, 0, 0]) for ax in first_row] == [10 * i for i in range(plots.MAX_COLS)]
