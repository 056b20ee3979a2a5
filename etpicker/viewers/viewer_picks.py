"""Picks on tomogram slices (XY and XZ), optionally with reference particles."""
from pyworkflow.protocol import params

from ..core import metrics  # torch-free
from ..protocols.protocol_evaluate import EtPickerProtEvaluate
from ..protocols.protocol_pick import EtPickerProtPick
from .. import convert
from . import plots
from .viewer_base import EtPickerProtocolViewer, middleOrChosen, newPlotter
from .viewer_scores import scoreHistogramPlotter, thresholdCurvePlotter

ALL_CLASSES = "all classes"


class EtPickerPicksViewer(EtPickerProtocolViewer):
    """Draws picks as circles of the particle diameter (the box size) on a tomogram's
    XY and XZ slices, coloured by class; reference particles dashed. Also the picks'
    score histogram and, with a reference, precision/recall against the score."""
    _label = "picks on slices"
    _targets = [EtPickerProtPick, EtPickerProtEvaluate]

    def _isPickRun(self):
        return isinstance(self.protocol, EtPickerProtPick)

    def _defineParams(self, form):
        form.addSection(label="Picks")
        self._addSliceParams(form)
        form.addParam("sliceY", params.IntParam, default=-1, label="Y of the XZ slice (voxels)",
                      help="Index of the XZ slice drawn under the XY one, 0-based; "
                           "-1 = the middle.")
        form.addParam("pickClass", params.EnumParam, default=0,
                      choices=[ALL_CLASSES] + [name for name, _ in self._pickedSets()],
                      label="Class", help="Class whose picks are drawn.")
        if self._isPickRun():
            form.addParam("reference", params.MultiPointerParam,
                          pointerClass="SetOfCoordinates3D", allowsNull=True,
                          label="Reference coordinates (optional, one set per class)",
                          help="True positions on the same tomograms, one set per class in "
                               "the model's class order: drawn dashed, and used for "
                               "precision/recall against the score.")
            form.addParam("tolerance", params.FloatParam, default=40.0, label="Tolerance (Å)",
                          help="Largest distance between a pick and its reference particle.")
        form.addParam("displayPicks", params.LabelParam, label="Show the picks on the slices")
        form.addParam("displayScores", params.LabelParam, label="Show the score histogram")
        form.addParam("displayCurve", params.LabelParam,
                      label="Show precision/recall against the score (needs a reference)")

    def _getVisualizeDict(self):
        return {"displayPicks": self._showPicks, "displayScores": self._showScores,
                "displayCurve": self._showCurve}

    # --------------------------- what is drawn -------------------------------
    def _pickedSets(self):
        """[(class name, SetOfCoordinates3D)] of the run's picks."""
        if self._isPickRun():
            outputs = dict(self.protocol.iterOutputAttributes())
            return [(name, outputs[self.protocol._outputName(name)])
                    for name in self.protocol.inputModel.get().getClasses()
                    if self.protocol._outputName(name) in outputs]
        return self.protocol.namedSets()[0]

    def _referenceSets(self):
        """[(class name, SetOfCoordinates3D)] of the reference, [] without one."""
        if not self._isPickRun():
            return self.protocol.namedSets()[1]
        names = [name for name, _ in self._pickedSets()]
        return [(name, pointer.get()) for name, pointer in zip(names, self.reference)]

    def _tomograms(self):
        if self._isPickRun():
            return convert.tomogramsList(self.protocol.inputTomograms.get())
        return self.protocol.tomograms()

    def _tomogramIds(self):
        return [tomo.getTsId() for tomo in self._tomograms()]

    def _toleranceVoxels(self):
        if self._isPickRun():
            return self.tolerance.get() / self.protocol.inputTomograms.get().getSamplingRate()
        return self.protocol._toleranceVoxels()

    def _picksAndReference(self):
        tomograms = self._tomograms()
        picks = convert.coordsPerTomogram(self._pickedSets(), tomograms)
        referenceSets = self._referenceSets()
        reference = convert.coordsPerTomogram(referenceSets, tomograms) if referenceSets else None
        return tomograms, picks, reference

    # --------------------------- display actions -----------------------------
    def _showPicks(self, paramName=None):
        pickedSets = self._pickedSets()
        if not pickedSets:
            return [self.errorMessage("The run has no picks yet.", "No picks")]
        tomograms, picks, reference = self._picksAndReference()
        tomo = tomograms[self.tomogram.get()]
        tsId = tomo.getTsId()
        # Circles of the particle diameter: each set's box size, in voxels of the tomogram.
        diameters = {name: s.getBoxSize() * s.getSamplingRate() / tomo.getSamplingRate()
                     for name, s in pickedSets}
        choice = self.getEnumText("pickClass")
        volume = self._readVolume(tomo.getFileName(), tomo.getSamplingRate())
        z = middleOrChosen(self.sliceZ.get(), volume.shape[0])
        y = middleOrChosen(self.sliceY.get(), volume.shape[1])
        errors = self._sliceErrors(volume, z=z, y=y)
        if errors:
            return errors
        plotter = newPlotter((9, 9), "etpicker picks")
        plots.draw_picks(plotter.figure, volume, picks[tsId], z=z, y=y,
                         diameters=diameters,
                         reference=reference[tsId] if reference else None,
                         classes=None if choice == ALL_CLASSES else [choice],
                         voxel_size=tomo.getSamplingRate(),
                         title="Picks of %s on %s" % (self.protocol.getRunName(), tsId))
        return [plotter]

    def _showScores(self, paramName=None):
        if not self._pickedSets():
            return [self.errorMessage("The run has no picks yet.", "No picks")]
        picks = convert.coordsPerTomogram(self._pickedSets(), self._tomograms())
        if not any(len(c) for c in picks.values()):
            return [self.errorMessage("The run found no particles.", "No picks")]
        return [scoreHistogramPlotter(picks, "Scores of the picks of %s"
                                      % self.protocol.getRunName())]

    def _showCurve(self, paramName=None):
        if not self._pickedSets() or not self._referenceSets():
            return [self.errorMessage("Choose reference coordinates (one set per class) to "
                                      "compute precision and recall.", "No reference")]
        _, picks, reference = self._picksAndReference()
        if not any(len(c) for c in picks.values()):
            return [self.errorMessage("The run found no particles.", "No picks")]
        pairs = [(picks[tsId], reference[tsId]) for tsId in reference]
        curve = metrics.threshold_curve(pairs, self._toleranceVoxels())
        return [thresholdCurvePlotter(curve, "Picks of %s against the reference"
                                      % self.protocol.getRunName())]
