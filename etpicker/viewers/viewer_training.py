"""Learning curves of a training run: loss and validation precision/recall/F1 per epoch."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, Viewer

from ..constants import MODEL_HISTORY, OUTPUT_MODEL
from ..objects import EtPickerModel
from ..protocols.protocol_train import EtPickerProtTrain
from . import plots
from .viewer_base import newPlotter


class EtPickerTrainingViewer(Viewer):
    """Training loss and validation picking scores per epoch (also while training runs)."""
    _name = "training curves"
    _environments = [DESKTOP_TKINTER]
    _targets = [EtPickerProtTrain, EtPickerModel]

    def _visualize(self, obj, **kwargs):
        if isinstance(obj, EtPickerModel):
            historyFile, title = obj.getHistoryFile(), "Training of %s" % obj.getPath()
        elif obj.hasAttribute(OUTPUT_MODEL):
            historyFile = getattr(obj, OUTPUT_MODEL).getHistoryFile()
            title = "Training run %s" % obj.getRunName()
        else:  # still training: the history grows epoch by epoch
            historyFile = os.path.join(obj._modelDir(), MODEL_HISTORY)
            title = "Training run %s (in progress)" % obj.getRunName()
        if not os.path.exists(historyFile):
            return [self.errorMessage("No training history yet (%s): no epoch has finished."
                                      % historyFile, "No training history")]
        plotter = newPlotter((11, 4.5), "etpicker training")
        plots.draw_training_history(plotter.figure, plots.read_history(historyFile), title=title)
        return [plotter]
