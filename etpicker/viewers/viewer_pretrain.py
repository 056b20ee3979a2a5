"""The loss curve of a pre-training run (the pretrain protocol)."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, Viewer

from ..constants import OUTPUT_PRETRAINED
from ..core import model_folder  # torch-free
from ..objects import EtPickerPretrainedModel
from ..protocols.protocol_pretrain import EtPickerProtPretrain
from . import plots
from .viewer_base import newPlotter


class EtPickerPretrainingViewer(Viewer):
    """Self-supervised loss per epoch (also while pre-training runs)."""
    _name = "pre-training loss"
    _environments = [DESKTOP_TKINTER]
    _targets = [EtPickerProtPretrain, EtPickerPretrainedModel]

    def _visualize(self, obj, **kwargs):
        if isinstance(obj, EtPickerPretrainedModel):
            folder, title = obj.getPath(), "Pre-training of %s" % obj.getPath()
        else:
            folder = obj._modelDir()
            title = "Pre-training run %s%s" % (obj.getRunName(),
                                               "" if obj.hasAttribute(OUTPUT_PRETRAINED) else " (in progress)")
        historyFile = os.path.join(folder, model_folder.HISTORY_NAME)
        if not os.path.exists(historyFile):
            return [self.errorMessage("No pre-training history yet (%s): no epoch has finished."
                                      % historyFile, "No pre-training history")]
        plotter = newPlotter((7, 4.5), "etpicker pre-training")
        plots.draw_pretraining_history(plotter.figure, model_folder.read_pretrain_history(historyFile),
                                       model_folder.read_config(folder), title=title)
        return [plotter]
