"""Curves of an adaptation run: the adaptation term per step and the source's validation F1."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, Viewer

from ..core import model_folder  # torch-free
from ..protocols.protocol_adapt import EtPickerProtAdapt
from . import plots
from .viewer_base import newPlotter


class EtPickerAdaptationViewer(Viewer):
    """What the adaptation optimised (discriminators, pseudo-labels or restyled patches) and
    how the source's own validation F1 fared, per epoch."""
    _name = "adaptation curves"
    _environments = [DESKTOP_TKINTER]
    _targets = [EtPickerProtAdapt]

    def _visualize(self, obj, **kwargs):
        folder = obj._modelDir()
        curvesFile = os.path.join(folder, model_folder.ADAPTATION_NAME)
        if not os.path.exists(curvesFile):
            return [self.errorMessage("No adaptation curves yet (%s): the run has not finished."
                                      % curvesFile, "No adaptation curves")]
        historyFile = os.path.join(folder, model_folder.HISTORY_NAME)
        rows = model_folder.read_history(historyFile) if os.path.exists(historyFile) else []
        method = model_folder.read_config(folder).get("adaptation", {}).get("method", "?")
        plotter = newPlotter((11, 4.5), "etpicker adaptation")
        plots.draw_adaptation(plotter.figure, model_folder.read_adaptation(curvesFile), rows,
                              title="Adaptation run %s (%s)" % (obj.getRunName(), method))
        return [plotter]
