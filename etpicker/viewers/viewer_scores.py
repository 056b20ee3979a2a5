"""Pick scores: histogram per class and precision/recall/F1 against a score threshold."""
import numpy as np
from pyworkflow.viewer import DESKTOP_TKINTER, Viewer

from .. import convert
from ..core import io, metrics  # torch-free
from ..protocols.protocol_evaluate import EtPickerProtEvaluate
from . import plots
from .viewer_base import newPlotter


def scoreHistogramPlotter(picksPerTomogram, title):
    """Plotter of the score histogram of all tomograms' picks, one histogram per class."""
    coords = list(picksPerTomogram.values())
    if not coords or any(c.score is None for c in coords):
        raise ValueError("these picks have no scores")
    merged = io.Coords(np.concatenate([c.names for c in coords]),
                       np.concatenate([c.xyz for c in coords]),
                       np.concatenate([c.score for c in coords]))
    plotter = newPlotter((7, 4.5), "etpicker scores")
    plots.draw_score_histograms(plotter.figure, merged, title=title)
    return plotter


def thresholdCurvePlotter(curve, title):
    plotter = newPlotter((11, 4.5), "etpicker precision/recall")
    plots.draw_threshold_curve(plotter.figure, curve, title=title)
    return plotter


class EtPickerEvaluationViewer(Viewer):
    """An evaluation run's precision/recall against the score threshold and its scores."""
    _name = "precision / recall"
    _environments = [DESKTOP_TKINTER]
    _targets = [EtPickerProtEvaluate]

    def _visualize(self, obj, **kwargs):
        curveFile = obj.curveFile()
        if curveFile is None:
            return [self.errorMessage("The run has no precision/recall curve: it has not "
                                      "finished, or the picks have no scores.", "No curve")]
        result = obj.result()[metrics.ALL]
        title = ("Evaluation %s: F1 %.3f (precision %.3f, recall %.3f) at tolerance %g Å"
                 % (obj.getRunName(), result["f1"], result["precision"], result["recall"],
                    obj.tolerance.get()))
        picked, _ = obj.namedSets()
        picks = convert.coordsPerTomogram(picked, obj.tomograms())
        return [thresholdCurvePlotter(metrics.read_curve(curveFile), title),
                scoreHistogramPlotter(picks, "Scores of the evaluated picks")]
