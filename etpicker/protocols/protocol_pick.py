"""Pick: tomograms + an etpicker model -> one SetOfCoordinates3D per class.

Tomograms are picked one step each, as they arrive when the input is still streaming."""
import os
import time

from pyworkflow.object import Set
from pyworkflow.protocol import params, STEPS_PARALLEL
from pyworkflow.protocol.constants import STATUS_NEW
from tomo.objects import SetOfCoordinates3D, SetOfTomograms
from tomo.protocols import ProtTomoPicking

from .. import convert
from ..constants import OUTPUT_COORDINATES_PREFIX
from ..core.settings import PickSettings  # torch-free
from .protocol_base import EtPickerProtBase, quote

DEFAULTS = PickSettings.defaults()  # the core's, for the form


class EtPickerProtPick(EtPickerProtBase, ProtTomoPicking):
    """Picks particles with a trained etpicker model.

    One step per tomogram (they run in parallel with Scipion threads, one GPU of the
    GPU list each); each tomogram's picks are added to the outputs as soon as it is
    done. When the input tomograms are still streaming in, each new tomogram is
    picked as it arrives and the outputs close when the input closes. A tomogram
    that fails is reported in the log and the summary, and the others' picks stay.
    Outputs: one set of coordinates per class, named outputCoordinates_<class>,
    with the class index (1-based) in groupId and the MP-NMS score in _score.
    """
    _label = "pick"

    def __init__(self, **kwargs):
        EtPickerProtBase.__init__(self, **kwargs)
        self.stepsExecutionMode = STEPS_PARALLEL

    def _defineParams(self, form):
        self._defineGpuParams(form)
        form.getParam(params.GPU_LIST).help.set(
            "GPUs to use, e.g. 0,1,2,3: each tomogram's step takes one GPU of the list, so "
            "give as many threads as GPUs plus one (Parallelization) to pick that many "
            "tomograms at a time.")
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Tomograms",
                      help="Tomograms at the model's voxel size (Å/voxel).")
        form.addParam("inputModel", params.PointerParam, pointerClass="EtPickerModel",
                      important=True, label="Model",
                      help="A model from etpicker's train or import model protocols.")
        form.addParam("boxSize", params.FloatParam, allowsNull=True,
                      label="Box size (Å) (optional)",
                      help="Box size of the output coordinates in Å (stored in voxels of "
                           "the tomograms), for extraction downstream. Empty: each class "
                           "keeps the box size of its training coordinates; for an imported "
                           "model, twice its largest label diameter.")

        form.addSection(label="Picking")
        form.addParam("threshold", params.FloatParam, default=DEFAULTS["threshold"],
                      label="Segmentation threshold",
                      help="Probability (0 < p <= 1) from which a voxel belongs to a class.")
        form.addParam("minScore", params.FloatParam, allowsNull=True,
                      label="Minimum score (optional)",
                      help="Drop picks with an MP-NMS score below this (the score grows "
                           "with the segmented volume). Empty: per class, the threshold that gave "
                           "the best F1 on the validation data during training.")
        form.addParam("minDistance", params.FloatParam, allowsNull=True,
                      label="Minimum distance (voxels) (optional)",
                      help="Of two picks closer than this, keep the higher score. "
                           "Empty: the core's default (from the label diameters).")
        form.addParam("shapeCheck", params.BooleanParam, default=DEFAULTS["shape_check"],
                      label="Use the model's shape checks?",
                      help="Where training fitted a shape check for a class (a logistic model on "
                           "the density around each pick, kept where it raised "
                           "validation F1), picks of that class must pass it. No: keep every "
                           "pick above the minimum score.")
        form.addParam("pad", params.IntParam, allowsNull=True,
                      label="Tile padding (voxels) (optional)",
                      help="Border of each tile discarded (tiles overlap by twice this). "
                           "Empty: the model's, the padding its training validated with "
                           "(1/6 of its patch size by default).")
        form.addParam("batch", params.IntParam, default=DEFAULTS["batch"], label="Batch size (tiles)")
        form.addParallelSection(threads=1, mpi=0)

    def _insertAllSteps(self):
        # A failed tomogram's step returned its failure record as result file; removing
        # the record makes "Continue" run that step again (pyworkflow re-runs a finished
        # step whose result files are missing), and only that step.
        for tsId in self._failedTomograms():
            os.remove(self._failedFile(tsId))
        self._tomograms = {}  # tsId -> Tomogram, of every tomogram with a pick step
        tomograms, closed = self._readInput()
        pickSteps = self._insertPickSteps(tomograms)
        # While the input streams, closing waits: _stepsCheck adds the new tomograms'
        # steps to its prerequisites and releases it once the input is closed.
        self._closeStep = self._insertFunctionStep(self.closeOutputStep, prerequisites=pickSteps,
                                                   wait=not closed, needsGPU=False)
        if not closed:
            self.info("The input tomograms are still streaming: each new one is picked as it "
                      "arrives; the outputs close when the input closes.")

    def _insertPickSteps(self, tomograms):
        self._tomograms.update((tomo.getTsId(), tomo) for tomo in tomograms)
        return [self._insertFunctionStep(self.pickStep, tomo.getTsId(), prerequisites=[])
                for tomo in tomograms]

    def _readInput(self):
        """The input's tomograms not yet given a step, and whether the input is closed, read
        from its file: a streaming producer keeps adding to it while this run goes on."""
        tomoSet = SetOfTomograms(filename=self.inputTomograms.get().getFileName())
        tomoSet.loadAllProperties()
        closed = tomoSet.isStreamClosed()  # read first: the items read next include the last
        new = [tomo.clone() for tomo in tomoSet.iterItems(orderBy="id")
               if tomo.getTsId() not in self._tomograms]
        tomoSet.close()
        return new, closed

    def _stepsCheck(self):
        """Streaming: called by pyworkflow every few seconds while the steps run."""
        closeStep = self._steps[self._closeStep - 1]
        if not closeStep.isWaiting():
            return
        tomograms, closed = self._readInput()
        if tomograms:
            closeStep.addPrerequisites(*self._insertPickSteps(tomograms))
            self.info("New tomograms in the input at %s: %s." % (
                time.strftime("%H:%M:%S"), ", ".join(t.getTsId() for t in tomograms)))
        if closed:
            self.info("The input tomograms are closed at %s: %d in all."
                      % (time.strftime("%H:%M:%S"), len(self._tomograms)))
            closeStep.setStatus(STATUS_NEW)
        if tomograms or closed:
            self.updateSteps()

    # --------------------------- STEPS ---------------------------------------
    def pickStep(self, tsId):
        tomo = self._tomograms[tsId]
        picks = os.path.join(self._picksDir(), "%s.csv" % tsId)
        if os.path.exists(self._pickedFile(tsId)):
            # "Continue" after a kill re-runs steps that did not finish: keep what is done
            self.info("Tomogram %s was picked before: kept." % tsId)
            return picks
        model = self.inputModel.get()
        errorFile = self._getExtraPath("logs", "%s.stderr" % tsId)
        os.makedirs(os.path.dirname(errorFile), exist_ok=True)
        args = ["--model", quote(model.getPath()),
                "--tomos", quote(convert.tomogramPath(tomo, self._getExtraPath("tomos"))),
                "--out", quote(self._picksDir()),
                "--threshold %g --batch %d" % (self.threshold.get(), self.batch.get()),
                # Scipion's sampling rate, not the header's (often 1 Å): validated against the model
                "--voxel-size %g" % tomo.getSamplingRate(),
                self._deviceArg()]
        if self.pad.get() is not None:
            args.append("--pad %d" % self.pad.get())
        if self.minScore.get() is not None:
            args.append("--min-score %g" % self.minScore.get())
        if self.minDistance.get() is not None:
            args.append("--min-distance %g" % self.minDistance.get())
        if not self.shapeCheck.get():
            args.append("--no-shape-check")
        # stderr goes to a file so that a failure can be quoted in the log and summary.
        args.append("2> %s" % quote(errorFile))
        try:
            self._runCore("pick", *args)
            if not os.path.exists(picks):  # a queue's job does not pass on the exit code
                raise RuntimeError("the core wrote no picks for %s" % tsId)
        except Exception as error:
            self._forwardStderr(errorFile)
            message = self._errorLine(errorFile) or str(error)
            with open(self._failedFile(tsId), "w") as handle:
                handle.write(message)
            self.error("Picking FAILED on tomogram %s (%s): %s. The other tomograms "
                       "are picked as usual." % (tsId, tomo.getFileName(), message))
            return self._failedFile(tsId)
        self._forwardStderr(errorFile)
        with self._lock:
            message = self._appendPicks(tomo, picks)
            with open(self._pickedFile(tsId), "w") as handle:  # its picks are in the outputs
                handle.write(message)
        return picks

    def closeOutputStep(self):
        self._closeOutputSet()
        failed = self._failedTomograms()
        if failed:
            # Failing the run (after the others' picks are saved) keeps an incomplete
            # result from feeding the next protocols unnoticed.
            tsId = sorted(failed)[0]
            raise RuntimeError(
                "Picking failed on %d of %d tomogram(s): %s (%s: %s). The other tomograms' "
                "picks are in the outputs. Fix the cause and press Continue: only the failed "
                "tomograms are picked again."
                % (len(failed), len(self._tomograms),
                   ", ".join(sorted(failed)), tsId, failed[tsId]))

    # --------------------------- UTILS ---------------------------------------
    def _appendPicks(self, tomo, csvPath):
        """Add one tomogram's picks to the per-class outputs, creating them first; return
        the log line that says so."""
        classNames = self.inputModel.get().getClasses()
        outputs = [self._classOutput(name, tomo) for name in classNames]
        counts = [0] * len(classNames)
        for index, coord in convert.coordinatesFromCsv(csvPath, tomo, classNames):
            outputs[index].append(coord)
            counts[index] += 1
        for name, output in zip(classNames, outputs):
            created = not self.hasAttribute(self._outputName(name))
            self._updateOutputSet(self._outputName(name), output, state=Set.STREAM_OPEN)
            if created:
                self._defineSourceRelation(self.inputTomograms, output)
                self._defineSourceRelation(self.inputModel, output)
        message = "Tomogram %s picked at %s: %s." % (
            tomo.getTsId(), time.strftime("%H:%M:%S"),
            ", ".join("%d %s" % (n, name) for n, name in zip(counts, classNames)))
        self.info(message)
        return message

    def _classOutput(self, className, tomo):
        name = self._outputName(className)
        if self.hasAttribute(name):
            output = getattr(self, name)
            output.enableAppend()
            return output
        samplingRate = tomo.getSamplingRate()
        path = self._getPath("coordinates_%s.sqlite" % convert.safeName(className))
        if os.path.exists(path):
            # Picks of this run that the project has not seen (it was killed before the
            # project read its outputs): keep them, "Continue" does not pick them again.
            output = SetOfCoordinates3D(filename=path)
            output.loadAllProperties()
            output.enableAppend()
            output.setPrecedents(self.inputTomograms)
        else:  # tomo's name for it: coordinates<suffix>.sqlite
            output = self._createSetOfCoordinates3D(self.inputTomograms,
                                                    suffix="_" + convert.safeName(className))
        output.setSamplingRate(samplingRate)
        output.setBoxSize(round(self._boxSizeAngstrom(className) / samplingRate))
        output.setStreamState(Set.STREAM_OPEN)
        return output

    @staticmethod
    def _outputName(className):
        return OUTPUT_COORDINATES_PREFIX + convert.safeName(className)

    def _boxSizeAngstrom(self, className):
        if self.boxSize.get():
            return self.boxSize.get()
        model = self.inputModel.get()
        boxSizes = dict(zip(model.getClasses(), model.getBoxSizes()))
        if boxSizes.get(className):
            return boxSizes[className]
        # Weak labels are smaller than the particles (about 0.6x in our benchmarks).
        return 2 * max(model.getDiameters()) * model.getVoxelSize()

    def _picksDir(self):
        return self._getExtraPath("picks")

    def _failedFile(self, tsId):
        return self._getExtraPath("logs", "%s.failed" % tsId)

    def _pickedFile(self, tsId):
        """Written once a tomogram's picks are in the outputs."""
        return self._getExtraPath("logs", "%s.picked" % tsId)

    def _failedTomograms(self):
        logs = self._getExtraPath("logs")
        if not os.path.isdir(logs):
            return {}
        return {f[:-len(".failed")]: self._errorLine(os.path.join(logs, f))
                for f in os.listdir(logs) if f.endswith(".failed")}

    def _forwardStderr(self, path):
        """Copy the core's stderr (kept in a file) into the run's log."""
        with open(path) as handle:
            text = handle.read().strip()
        if text:
            self.warning(text)

    @staticmethod
    def _errorLine(path):
        """The core's first error line (the cause), else the last line of ``path``."""
        if not os.path.exists(path):
            return ""
        with open(path) as handle:
            lines = [line.strip() for line in handle if line.strip()]
        errors = [line for line in lines if line.startswith("etpicker: error:")]
        return (errors or lines or [""])[0 if errors else -1]

    # --------------------------- INFO ----------------------------------------
    def _validate(self):
        tomograms, model = self.inputTomograms.get(), self.inputModel.get()
        # A streaming input may be empty yet: its tomograms are checked as they arrive.
        streaming = tomograms is not None and tomograms.isStreamOpen()
        errors = [] if streaming else self._emptySetErrors([tomograms], "tomograms")
        if model is not None:
            errors += self._modelErrors(model)
            if tomograms is not None and tomograms.getSamplingRate() and not errors:
                errors += self._voxelSizeErrors(tomograms, model)
        errors += self._tsIdErrors(tomograms)
        if self.boxSize.get() is not None and self.boxSize.get() <= 0:
            errors.append("The box size must be positive (Å).")
        if not 0 < self.threshold.get() <= 1:
            errors.append("The segmentation threshold is a probability in (0, 1].")
        if self.minDistance.get() is not None and self.minDistance.get() <= 0:
            errors.append("The minimum distance must be positive (voxels).")
        if self.pad.get() is not None and self.pad.get() < 0:
            errors.append("The tile padding must be at least 0 voxels.")
        if self.batch.get() < 1:
            errors.append("The batch size must be at least 1 tile.")
        return errors

    def _summary(self):
        summary = []
        for name, output in self.iterOutputAttributes():
            summary.append("%s: %d particles (class %s)."
                           % (name, output.getSize(), name[len(OUTPUT_COORDINATES_PREFIX):]))
        for tsId, message in sorted(self._failedTomograms().items()):
            summary.append("WARNING: picking failed on tomogram %s: %s" % (tsId, message))
        return summary or ["No picks yet."]

    def _methods(self):
        return ["Particles were picked with an etpicker model (3D ResUNet segmentation "
                "followed by mean-pooling non-maximum suppression) [Liu2024]."]
