"""The viewers' drawing functions, on small synthetic arrays (no Scipion, no torch)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from etpicker.core.io import Coords  # noqa: E402
from etpicker.core.metrics import ALL  # noqa: E402
from etpicker.core.model_folder import read_history  # noqa: E402
from etpicker.viewers import plots  # noqa: E402

SHAPE = (24, 48, 64)  # z, y, x
DIAMETERS = {"small": 6.0, "large": 10.0}


def _png_std(figure, path):
    figure.savefig(path, dpi=60)
    return float(imread(str(path))[..., :3].std())


def _volume_with_particles(coords):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=SHAPE).astype(np.float32)
    z, y, x = np.indices(SHAPE)
    for name, (cx, cy, cz) in zip(coords.names, coords.xyz):
        radius = DIAMETERS[name] / 2
        volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius ** 2] -= 3.0
    return volume


@pytest.fixture
def truth():
    return Coords(["small", "large", "large", "small"],
                  [[10, 10, 12], [40, 30, 12], [20, 35, 3], [55, 12, 20]])


def test_history_figure_is_drawn_from_history_csv(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,train_loss,val_loss,val_precision,val_recall,val_f1,seconds\n"
                    "1,0.9,0.95,0.2,0.1,0.133,10\n2,0.5,0.6,0.7,0.6,0.646,10\n"
                    "3,0.3,0.4,0.9,0.85,0.874,11\n")
    history = read_history(path)
    np.testing.assert_allclose([row["val_f1"] for row in history], [0.133, 0.646, 0.874])
    figure = Figure(figsize=(8, 3.5))
    plots.draw_training_history(figure, history)
    assert "3 epochs" in figure.get_suptitle()
    assert _png_std(figure, tmp_path / "history.png") > 0.05


def test_empty_history_is_refused():
    with pytest.raises(ValueError, match="no epoch"):
        plots.draw_training_history(Figure(), [])


def test_picks_are_circles_only_where_particles_cut_the_slice(truth, tmp_path):
    volume = _volume_with_particles(truth)
    picks = Coords(truth.names[:2], truth.xyz[:2] + 0.5, [0.9, 0.8])
    figure = Figure(figsize=(6, 6))
    plots.draw_picks(figure, volume, picks, z=12, y=30, diameters=DIAMETERS, reference=truth,
                     voxel_size=10.0)
    xy_axes, xz_axes = figure.axes[:2]
    xy_circles = [p for p in xy_axes.patches if isinstance(p, Circle)]
    # z=12 cuts the two picks and their two reference particles; the particle at z=3
    # (large, radius 5) and the one at z=20 (small, radius 3) are out of this slice.
    assert len(xy_circles) == 4
    # The section of a sphere cut through its centre has the particle's radius.
    radii = sorted(c.get_radius() for c in xy_circles if c.get_linestyle() == "-")
    assert radii == pytest.approx([np.sqrt(9 - 0.25), np.sqrt(25 - 0.25)])
    # y=30 cuts only the large particle at y=30 (and its pick).
    assert len([p for p in xz_axes.patches if isinstance(p, Circle)]) == 2
    assert _png_std(figure, tmp_path / "picks.png") > 0.05


def test_picks_can_show_one_class_and_refuse_an_unknown_one(truth):
    volume = _volume_with_particles(truth)
    figure = Figure()
    plots.draw_picks(figure, volume, truth, z=12, diameters=DIAMETERS, classes=["large"])
    assert len([p for p in figure.axes[0].patches if isinstance(p, Circle)]) == 1
    with pytest.raises(ValueError, match="unknown class"):
        plots.draw_picks(Figure(), volume, truth, z=12, diameters=DIAMETERS, classes=["huge"])
    with pytest.raises(ValueError, match="outside the tomogram"):
        plots.draw_picks(Figure(), volume, truth, z=SHAPE[0], diameters=DIAMETERS)


def test_slab_mean_reads_the_slices_around_the_index():
    volume = np.arange(SHAPE[0], dtype=np.float32)[:, None, None] * np.ones(SHAPE, np.float32)
    np.testing.assert_allclose(plots.slab_mean(volume, 0, 10, half_width=2), 10.0)
    np.testing.assert_allclose(plots.slab_mean(volume, 0, 0, half_width=2), 1.0)  # slices 0..2
    assert plots.slab_mean(volume, 1, 5).shape == (SHAPE[0], SHAPE[2])


def test_contrast_ignores_a_few_very_bright_voxels():
    image = np.random.default_rng(1).normal(size=(100, 100))
    image[:3, :3] = 1000.0  # a gold bead
    vmin, vmax = plots.contrast_limits(image)
    assert vmax < 5.0 and vmin > -5.0


def test_label_overlay_counts_labelled_voxels(truth, tmp_path):
    volume = _volume_with_particles(truth)
    labels = np.zeros(SHAPE, np.uint8)
    labels[12, 8:13, 8:13] = 2  # 25 voxels of the second class
    figure = Figure(figsize=(8, 4))
    plots.draw_labels(figure, volume, labels, 12, ["small", "large"], voxel_size=10.0)
    legend_texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend_texts == ["small: 0 labelled voxels in this slice",
                            "large: 25 labelled voxels in this slice"]
    assert _png_std(figure, tmp_path / "labels.png") > 0.05
    with pytest.raises(ValueError, match="differ in shape"):
        plots.draw_labels(Figure(), volume, labels[:-1], 12, ["small", "large"])


def test_score_histogram_has_one_histogram_per_class(truth, tmp_path):
    picks = Coords(truth.names, truth.xyz, [0.9, 0.8, 0.3, 0.5])
    figure = Figure()
    plots.draw_score_histograms(figure, picks)
    labels = sorted(t.get_text() for t in figure.axes[0].get_legend().get_texts())
    assert labels == ["large (2 picks)", "small (2 picks)"]
    assert _png_std(figure, tmp_path / "scores.png") > 0.05
    with pytest.raises(ValueError, match="no scores"):
        plots.draw_score_histograms(Figure(), truth)


def test_threshold_curve_figure_marks_the_best_f1(tmp_path):
    thresholds = np.array([0.1, 0.2, 0.8, 0.9])
    precision, recall = np.array([0.5, 2 / 3, 1.0, 1.0]), np.array([0.5, 0.5, 0.5, 0.25])
    table = {"threshold": thresholds, "precision": precision, "recall": recall,
             "f1": 2 * precision * recall / (precision + recall)}
    figure = Figure(figsize=(8, 3.5))
    plots.draw_threshold_curve(figure, {"small": table, ALL: table})
    annotation = [t.get_text() for t in figure.axes[0].texts]
    assert annotation == ["best F1 0.667\nat score ≥ 0.8"]
    assert _png_std(figure, tmp_path / "curve.png") > 0.05
