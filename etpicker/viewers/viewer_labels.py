"""Weak labels over a tomogram slice: what the network will learn."""
from pyworkflow.protocol import params

from .. import convert
from ..constants import OUTPUT_LABELS
from ..protocols.protocol_labels import EtPickerProtLabels
from . import plots
from .viewer_base import EtPickerProtocolViewer, middleOrChosen, newPlotter


class EtPickerLabelsViewer(EtPickerProtocolViewer):
    """Draws a weak-label run's label volume over its tomogram."""
    _label = "weak labels"
    _targets = [EtPickerProtLabels]

    def _defineParams(self, form):
        form.addSection(label="Weak labels")
        self._addSliceParams(form)
        form.addParam("displayLabels", params.LabelParam, label="Show the labels on the slice")

    def _getVisualizeDict(self):
        return {"displayLabels": self._showLabels}

    def _masks(self):
        return {mask.getTsId(): mask.clone()
                for mask in getattr(self.protocol, OUTPUT_LABELS).iterItems(orderBy="id")}

    def _tomogramIds(self):
        return list(self._masks()) if self.protocol.hasAttribute(OUTPUT_LABELS) else []

    def _showLabels(self, paramName=None):
        if not self.protocol.hasAttribute(OUTPUT_LABELS):
            return [self.errorMessage("The run has no label volumes yet.", "No labels")]
        tsId = self._chosenTsId()
        mask = self._masks()[tsId]
        tomogram = self._readVolume(mask.getVolName(), mask.getSamplingRate())
        labels = self._readVolume(mask.getFileName(), mask.getSamplingRate())
        z = middleOrChosen(self.sliceZ.get(), tomogram.shape[0])
        errors = self._sliceErrors(tomogram, z=z)
        if errors:
            return errors
        plotter = newPlotter((11, 5.5), "etpicker weak labels")
        plots.draw_labels(plotter.figure, tomogram, labels, z,
                          convert.classNames(list(self.protocol.inputCoordinates)),
                          voxel_size=mask.getSamplingRate(),
                          title="Weak labels of %s (%s)" % (tsId, self.protocol.getRunName()))
        return [plotter]
