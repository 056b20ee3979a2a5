"""Learning curves of a training run: loss and validation precision/recall/F1 per epoch."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, Viewer

from ..constants import OUTPUT_MODEL
from ..core import model_folder  # torch-free
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
            historyFile = os.path.join(obj._modelDir(), model_folder.HISTORY_NAME)
            title = "Training run %s (in progress)" % obj.getRunName()
        if not os.path.exists(historyFile):
            return [self.errorMessage("No training history yet (%s): no epoch has finished."
                                      % historyFile, "No training history")]
        plotter = newPlotter((11, 4.5), "etpicker training")
        folder = os.path.dirname(historyFile)
        config = model_folder.read_config(folder) if os.path.exists(
            os.path.join(folder, model_folder.CONFIG_NAME)) else None
        plots.draw_training_history(plotter.figure, model_folder.read_history(historyFile), config, title=title)
        return [plotter]
