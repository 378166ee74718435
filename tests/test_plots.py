import numpy as np
import torch
from matplotlib.figure import Figure

from cpmc_lib import plots
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
    fig = plots.plot_history([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}], ["loss"])
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1
    fig = plots.plot_curves({"cam": [[0.1, 10], [0.2, 30], [0.3, 20]]}, "threshold", "mIoU")
    best = fig.axes[0].lines[1]
    assert best.get_xdata()[0] == 0.2
    fig = plots.plot_bars({"a": [1, 2], "b": [3, 4]}, ["c1", "c2"], "IoU")
    assert len(fig.axes[0].patches) == 4


def test_at_a_glance_picks_the_image_with_calibration_regions():
    samples = [
        {
            "name": n,
            "img": torch.zeros(3, 8, 8, dtype=torch.uint8),
            "mask": torch.zeros(8, 8, dtype=torch.int64),
        }
        for n in ("quiet", "busy")
    ]
    maps = torch.rand(2, 3, 4, 4)
    fn, fp = torch.zeros(2, 3, 4, 4, dtype=torch.bool), torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    fn[1, 1, :2], fp[1, 0] = True, True  # image 1 has an FN region; its background channel does not count
    steps = {"cam": maps, "refined": maps, "proto": maps, "cpmc": maps, "fn": fn, "fp": fp}
    fig = plots.plot_at_a_glance(samples, steps)
    assert len(fig.axes) == 7 and "busy" in fig.get_suptitle()
    assert "quiet" in plots.plot_at_a_glance(samples, steps, index=0).get_suptitle()
