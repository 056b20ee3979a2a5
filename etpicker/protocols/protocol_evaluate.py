"""Evaluate: picked coordinates against reference coordinates -> TP/FP/FN, P/R/F1."""
import csv
import json
import os

import numpy as np
from pyworkflow.protocol import params

from .. import convert
from ..core import io, metrics  # torch-free parts of the core: the CSV codec and scoring
from ..core.metrics import ALL, COUNTS, RATIOS
from .protocol_base import EtPickerProtBase

EVALUATION_JSON = "evaluation.json"
EVALUATION_TABLE = "evaluation.csv"
THRESHOLD_CURVE = "threshold_curve.csv"
TABLE_COLUMNS = ("class",) + COUNTS + RATIOS


class EtPickerProtEvaluate(EtPickerProtBase):
    """Compares picked coordinates with reference coordinates of the same tomograms.

    The i-th picked set is compared with the i-th reference set (one set per class,
    the class named after the reference set). A pick is a true positive when it is
    matched one-to-one to a reference particle of its class within the tolerance.
    Gives TP/FP/FN, precision, recall and F1 per class and for all classes together
    (localisation: class ignored), kept in extra/evaluation.csv and evaluation.json,
    and precision/recall against the score threshold in extra/threshold_curve.csv.
    """
    _label = "evaluate picks"

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputPicks", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates3D", important=True,
                      label="Picked coordinates (one set per class)",
                      help="Usually the outputs of etpicker's pick protocol, in the same "
                           "order as the reference sets.")
        form.addParam("inputReference", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates3D", important=True,
                      label="Reference coordinates (one set per class)",
                      help="The true particle positions (e.g. manual annotations) on the "
                           "same tomograms; each set is one class, named after its label.")
        form.addParam("tolerance", params.FloatParam, default=40.0,
                      label="Tolerance (Å)",
                      help="A pick matches a reference particle when their centres are at "
                           "most this far apart (Å; converted to voxels with the tomograms' "
                           "sampling rate). A common choice is half the particle radius.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.evaluateStep, needsGPU=False)

    # --------------------------- STEPS ---------------------------------------
    def evaluateStep(self):
        picks, reference = self._coordsPerTomogram()
        for folder, coords in (("picks", picks), ("reference", reference)):
            os.makedirs(self._getExtraPath(folder), exist_ok=True)
            for tsId, tomoCoords in coords.items():
                io.write_coords(self._getExtraPath(folder, "%s.csv" % tsId), tomoCoords)
        pairs = [(picks[tsId], reference[tsId]) for tsId in reference]
        unscored = sorted(set().union(*(p.get().getTSIds() for p in self.inputPicks))
                          - self.annotatedTsIds())
        if unscored:
            self.info("Picks on tomograms without reference coordinates are not scored: %s."
                      % ", ".join(unscored))
        result = metrics.evaluate_many(pairs, self._toleranceVoxels())
        with open(self._getExtraPath(EVALUATION_JSON), "w") as handle:
            json.dump(result, handle, indent=2)
        self._writeTable(result)
        # tomo gives every coordinate a score (0 by default): a curve needs scores that vary.
        scores = [p.score for p, _ in pairs if len(p)]
        if scores and all(s is not None for s in scores) and np.ptp(np.concatenate(scores)) > 0:
            metrics.write_curve(self._getExtraPath(THRESHOLD_CURVE),
                                metrics.threshold_curve(pairs, self._toleranceVoxels()))
        overall = result[ALL]
        self.info("F1=%.4f (precision %.4f, recall %.4f; TP %d, FP %d, FN %d)"
                  % (overall["f1"], overall["precision"], overall["recall"],
                     overall["tp"], overall["fp"], overall["fn"]))

    # --------------------------- UTILS ---------------------------------------
    def classNames(self):
        return convert.classNames(list(self.inputReference))

    def tomograms(self):
        """The tomograms on which the picks are evaluated: those with reference coordinates
        (a reference set's precedents are often all the tomograms, annotated or not)."""
        annotated = self.annotatedTsIds()
        return [tomo for tomo in convert.tomogramsList(self.inputReference[0].get().getPrecedents())
                if tomo.getTsId() in annotated]

    def annotatedTsIds(self):
        return set().union(*(p.get().getTSIds() for p in self.inputReference))

    def namedSets(self):
        """([(class, picked set)], [(class, reference set)]), paired by position."""
        names = self.classNames()
        return (list(zip(names, [p.get() for p in self.inputPicks])),
                list(zip(names, [p.get() for p in self.inputReference])))

    def _coordsPerTomogram(self):
        tomograms = self.tomograms()
        picked, reference = self.namedSets()
        return convert.coordsPerTomogram(picked, tomograms), convert.coordsPerTomogram(reference, tomograms)

    def _toleranceVoxels(self):
        return self.tolerance.get() / self.inputReference[0].get().getPrecedents().getSamplingRate()

    def _writeTable(self, result):
        rows = [(name, values) for name, values in result["classes"].items()]
        rows.append((ALL, result[ALL]))
        with open(self._getExtraPath(EVALUATION_TABLE), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(TABLE_COLUMNS)
            for name, values in rows:
                writer.writerow([name] + [values[k] for k in COUNTS] +
                                ["%.4f" % values[k] for k in RATIOS])

    def result(self):
        """The evaluation as in the core's ``evaluate --json``; None before it ran."""
        path = self._getExtraPath(EVALUATION_JSON)
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    def curveFile(self):
        """The precision/recall-against-threshold table; None when picks had no scores."""
        path = self._getExtraPath(THRESHOLD_CURVE)
        return path if os.path.exists(path) else None

    # --------------------------- INFO ----------------------------------------
    def _validate(self):
        picks = [p.get() for p in self.inputPicks]
        reference = [p.get() for p in self.inputReference]
        errors = self._emptySetErrors(reference, "reference coordinates")
        if not reference:
            errors.append("Choose the reference coordinates (one set per class).")
        elif len(picks) != len(reference):
            errors.append("Give as many picked sets as reference sets (one per class, in the "
                          "same order): %d picked, %d reference." % (len(picks), len(reference)))
        if self.tolerance.get() is None or self.tolerance.get() <= 0:
            errors.append("The tolerance must be a positive distance in Å.")
        if errors:
            return errors
        referenceIds = set(reference[0].getPrecedents().getTSIds())
        for coordSet in picks:
            unknown = set(coordSet.getTSIds()) - referenceIds
            if unknown:
                errors.append("Picks of %s are on tomograms without reference: %s. Evaluate "
                              "picks and reference of the same tomograms."
                              % (coordSet.getObjLabel() or coordSet.getNameId(),
                                 ", ".join(sorted(unknown))))
        return errors

    def _summary(self):
        result = self.result()
        if result is None:
            return ["Not evaluated yet (tolerance %g Å)." % self.tolerance.get()]
        summary = ["Tolerance %g Å (%.2f voxels)." % (self.tolerance.get(),
                                                      self._toleranceVoxels())]
        rows = list(result["classes"].items()) + [("all classes (localisation)", result[ALL])]
        for name, v in rows:
            summary.append("%s: precision %.3f, recall %.3f, *F1 %.3f* (TP %d, FP %d, FN %d)"
                           % (name, v["precision"], v["recall"], v["f1"],
                              v["tp"], v["fp"], v["fn"]))
        return summary

    def _methods(self):
        return ["Picks were compared with reference coordinates by one-to-one matching "
                "within %g Å (etpicker evaluate)." % self.tolerance.get()]
