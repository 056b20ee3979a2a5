"""Weak labels: paint the masks the network learns from, to inspect them."""
import os

from pyworkflow.protocol import params
from tomo.objects import SetOfTomoMasks, TomoMask

from .. import convert
from ..constants import OUTPUT_LABELS
from ..core.labels import LABEL_TYPES
from .protocol_base import EtPickerProtBase, quote, diameterArgs, diameterErrors


class EtPickerProtLabels(EtPickerProtBase):
    """Paints etpicker's weak labels around annotated particle centres.

    Each set of coordinates is one class. The result is one label volume per
    tomogram (0 = background, i = i-th class): exactly what training uses, to
    check diameters and label type before training.
    """
    _label = "weak labels"
    _possibleOutputs = {OUTPUT_LABELS: SetOfTomoMasks}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Tomograms",
                      help="Tomograms to paint labels for.")
        form.addParam("inputCoordinates", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates3D", important=True,
                      label="Annotated coordinates (one set per class)",
                      help="Particle centres; each set is one class, named after the set's "
                           "label (or the run that made it).")
        self._defineLabelParams(form)

    def _insertAllSteps(self):
        self._insertFunctionStep(self.labelStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS ---------------------------------------
    def labelStep(self):
        tomograms = convert.tomogramsList(self.inputTomograms.get())
        pointers = list(self.inputCoordinates)
        names = convert.classNames(pointers)
        csvs = convert.writeTomogramCsvs(self._getExtraPath("coords"), tomograms,
                                         [p.get() for p in pointers], names)
        samplingRate = self.inputTomograms.get().getSamplingRate()
        os.makedirs(self._getExtraPath("labels"), exist_ok=True)
        for tomo in tomograms:
            tsId = tomo.getTsId()
            self._runCore("labels",
                          "--tomo", quote(convert.tomogramPath(tomo, self._getExtraPath("tomos"))),
                          "--coords", quote(csvs[tsId]),
                          "--out", quote(self._labelFile(tsId)),
                          "--label-type", LABEL_TYPES[self.labelType.get()],
                          "--classes", quote(",".join(names)),
                          "--voxel-size %g" % samplingRate,
                          diameterArgs(self.diameters.get(), samplingRate))

    def createOutputStep(self):
        inputTomograms = self.inputTomograms.get()
        labels = self._createSet(SetOfTomoMasks, "tomomasks%s.sqlite", "")
        labels.copyInfo(inputTomograms)
        for tomo in convert.tomogramsList(inputTomograms):
            mask = TomoMask()
            mask.copyInfo(tomo)
            mask.setTsId(tomo.getTsId())
            mask.setSamplingRate(tomo.getSamplingRate())
            mask.setFileName(self._labelFile(tomo.getTsId()))
            mask.setVolName(tomo.getFileName())
            labels.append(mask)
        self._defineOutputs(**{OUTPUT_LABELS: labels})
        self._defineSourceRelation(self.inputTomograms, labels)
        for pointer in self.inputCoordinates:
            self._defineSourceRelation(pointer, labels)

    def _labelFile(self, tsId):
        return self._getExtraPath("labels", "%s_labels.mrc" % tsId)

    # --------------------------- INFO ----------------------------------------
    def _validate(self):
        tomograms = self.inputTomograms.get()
        coordSets = [p.get() for p in self.inputCoordinates]
        errors = self._emptySetErrors([tomograms], "tomograms")
        errors += self._emptySetErrors(coordSets, "coordinates")
        errors += self._tsIdErrors(tomograms)
        if tomograms is not None:
            errors += diameterErrors(self.diameters.get(), len(coordSets),
                                     tomograms.getSamplingRate())
        return errors

    def _summary(self):
        names = convert.classNames(list(self.inputCoordinates))
        summary = ["Classes: %s; label type %s; diameter %s Å."
                   % (", ".join(names), LABEL_TYPES[self.labelType.get()],
                      self.diameters.get() or "core default")]
        if self.hasAttribute(OUTPUT_LABELS):
            summary.append("%d label volumes." % getattr(self, OUTPUT_LABELS).getSize())
        return summary

    def _methods(self):
        return ["Weak labels (%s) were painted around annotated particle centres with "
                "etpicker [Liu2024]." % LABEL_TYPES[self.labelType.get()]]
