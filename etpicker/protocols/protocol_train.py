"""Train: annotated tomograms -> an etpicker model."""
import os

from pyworkflow.protocol import params

from .. import convert
from ..constants import OUTPUT_MODEL
from ..core import model_folder, recipe, settings  # torch-free: the core's rules for these fields
from ..core.errors import InputError
from ..core.labels import LABEL_TYPES
from ..core.recipe import CPU_RECIPE, GPU_RECIPE, PATCH_PER_PARTICLE
from ..core.settings import MIN_VAL_PARTICLES
from ..objects import EtPickerModel
from .protocol_base import EtPickerProtBase, quote, quoteAll, diameterArgs, diameterErrors, parseDiameters


DEFAULTS = settings.TrainSettings.defaults()  # the core's, for the form


class EtPickerProtTrain(EtPickerProtBase):
    """Trains etpicker's 3D segmentation network on weakly labelled particles.

    Each input set of coordinates is one class, named after the set's label (or
    the run that made it). The model keeps the best weights by validation picking
    F1, the training history and a checkpoint: "Continue" resumes from it.
    """
    _label = "train"
    _possibleOutputs = {OUTPUT_MODEL: EtPickerModel}

    def _defineParams(self, form):
        self._defineGpuParams(form)
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Training tomograms",
                      help="Tomograms with annotated particles. Particles should span "
                           "about 7-25 voxels: bin the tomograms when they are bigger.")
        form.addParam("inputCoordinates", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates3D", important=True,
                      label="Annotated coordinates (one set per class)",
                      help="Particle centres; each set is one class, named after the set's "
                           "label (or the run that made it). Sets at another sampling rate "
                           "than the tomograms are scaled.")
        form.addParam("allAnnotated", params.BooleanParam, default=DEFAULTS["annotations"] == "complete",
                      label="Are all particles annotated?",
                      help="Yes: every particle of these classes in the training (and validation) "
                           "tomograms is annotated, so everything else is taught as background. No: "
                           "only some are (e.g. 30 of a tomogram's 120 ribosomes); particles the network "
                           "finds away from the annotations are then not taught as background, the rest "
                           "of what is not annotated is taught as background with less weight, and "
                           "validation and the shape checks do not count them as false picks. Answer "
                           "No whenever you left particles unclicked: taught as background, they cost "
                           "most of the recall.")
        form.addParam("valTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      allowsNull=True, label="Validation tomograms (optional)",
                      help="Tomograms held out to choose the best epoch, and each class's "
                           "score threshold, by picking F1; give %d or more particles per "
                           "class (fewer make both choices noisy). Empty: a fraction of the "
                           "training data is held out." % MIN_VAL_PARTICLES)
        form.addParam("valCoordinates", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates3D", allowsNull=True,
                      condition="valTomograms", label="Validation coordinates",
                      help="One set per class, in the same order as the training sets.")
        form.addParam("valFraction", params.FloatParam, default=DEFAULTS["val_fraction"],
                      condition="not valTomograms", label="Validation fraction",
                      help="Fraction (0-1) of the training data held out for validation "
                           "when no validation tomograms are given.")
        form.addParam("initModel", params.PointerParam, pointerClass="EtPickerModel,EtPickerPretrainedModel",
                      allowsNull=True, label="Initial model (optional)",
                      help="Start from this network instead of random weights: a pre-trained one (the "
                           "pretrain protocol, on unlabelled tomograms of the sample) or a trained model "
                           "(to fine-tune it, e.g. for a new dataset). Its encoder and decoder are copied "
                           "and its network widths used; the output layer too for a trained model of the "
                           "same classes.")

        form.addSection(label="Labels")
        self._defineLabelParams(form)

        form.addSection(label="Training")
        form.addParam("particleDiameters", params.StringParam, default="",
                      label="Particle diameter (Å)",
                      help="The particles' diameter in Å: one value for all classes or one per "
                           "class (comma separated). The weak labels (unless given), the "
                           "validation tolerance and the automatic patch follow from it. "
                           "Empty: each coordinate set's box size.")
        form.addParam("patch", params.IntParam, allowsNull=True, label="Patch size (voxels) (optional)",
                      help="Edge of the cubic training patch, a multiple of 8. Empty: automatic "
                           "(%d on a CPU, %d on a GPU, larger for particles over %d voxels)."
                           % (CPU_RECIPE["patch"], GPU_RECIPE["patch"],
                              CPU_RECIPE["patch"] / PATCH_PER_PARTICLE))
        form.addParam("pad", params.IntParam, allowsNull=True,
                      label="Tile padding (voxels) (optional)",
                      help="Border of each tile discarded when validating by picking; "
                           "the model keeps it for picking. Empty: the core's default "
                           "(1/6 of the patch).")
        form.addParam("epochs", params.IntParam, allowsNull=True, label="Epochs (optional)",
                      help="The most training epochs. Empty: with a time budget as many as it "
                           "allows, else %d." % settings.DEFAULT_EPOCHS)
        form.addParam("maxMinutes", params.FloatParam, default=0,
                      label="Time budget (minutes)",
                      help="Stop after this many minutes, keeping the best model so far. "
                           "0: no limit.")
        form.addParam("batch", params.IntParam, allowsNull=True, label="Batch size (patches) (optional)",
                      help="Empty: automatic (%d on a CPU, %d on a GPU)."
                           % (CPU_RECIPE["batch"], GPU_RECIPE["batch"]))
        form.addParam("learningRate", params.FloatParam, allowsNull=True,
                      label="Learning rate (optional)",
                      help="Peak of the one-cycle schedule. Empty: automatic (%g on a CPU, %g on "
                           "a GPU)." % (CPU_RECIPE["lr"], GPU_RECIPE["lr"]))
        form.addParam("seed", params.IntParam, default=DEFAULTS["seed"], label="Random seed")
        form.addParam("shapeCheck", params.BooleanParam, default=DEFAULTS["shape_check"],
                      label="Fit shape checks?",
                      help="After training, fit per class a logistic model on the density "
                           "around the network's picks (radial profile, and how it is arranged on each "
                           "shell) in the training tomograms, to reject "
                           "other macromolecules of the class's size; a class keeps it only where it "
                           "raised validation F1. With partial annotations it is fitted on annotated "
                           "against unannotated picks, and kept by validation's score for partial "
                           "annotations. Each class also keeps a likeness check where it does "
                           "not lower validation F1: a pick is kept only if the density around it "
                           "resembles the class's annotated particles. "
                           "Takes about one picking of each training "
                           "tomogram, counted in the time budget.")
        form.addParam("widths", params.StringParam, default="",
                      expertLevel=params.LEVEL_ADVANCED, label="Network widths",
                      help="Channels of the 4 network levels, e.g. 24,48,72,108 (the "
                           "reference). Smaller widths train faster but learn less. "
                           "Empty: automatic (%s on a CPU, %s on a GPU)."
                           % (",".join(map(str, CPU_RECIPE["widths"])),
                              ",".join(map(str, GPU_RECIPE["widths"]))))

    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep)
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS ---------------------------------------
    def convertInputStep(self):
        names = self._classNames()
        self._writeInputs("train", self.inputTomograms.get(),
                          [p.get() for p in self.inputCoordinates], names)
        if self.valTomograms.get() is not None:
            self._writeInputs("val", self.valTomograms.get(),
                              [p.get() for p in self.valCoordinates], names)

    def trainStep(self):
        samplingRate = self.inputTomograms.get().getSamplingRate()
        args = ["--tomos", quoteAll(self._inputFiles("train", "tomos", ".mrc")),
                "--coords", quoteAll(self._inputFiles("train", "coords", ".csv")),
                "--out", quote(self._modelDir()),
                "--classes", quote(",".join(self._classNames())),
                "--label-type", LABEL_TYPES[self.labelType.get()],
                # Scipion's sampling rate, not the MRC headers (often wrong after import)
                "--voxel-size %g" % samplingRate,
                diameterArgs(self.diameters.get(), samplingRate),
                self._particleDiameterArgs(samplingRate),
                "--seed %d" % self.seed.get(),
                self._deviceArg()]
        for option, value, form in (("--epochs", self.epochs.get(), "%d"),
                                    ("--patch", self.patch.get(), "%d"), ("--batch", self.batch.get(), "%d"),
                                    ("--lr", self.learningRate.get(), "%g")):
            if value is not None:  # empty: the core's automatic recipe
                args.append(("%s " + form) % (option, value))
        if self.valTomograms.get() is not None:
            args += ["--val-tomos", quoteAll(self._inputFiles("val", "tomos", ".mrc")),
                     "--val-coords", quoteAll(self._inputFiles("val", "coords", ".csv"))]
        else:
            args.append("--val-fraction %g" % self.valFraction.get())
        if self.pad.get() is not None:
            args.append("--pad %d" % self.pad.get())
        if self.widths.get():
            args.append("--widths %s" % quote(self.widths.get().replace(" ", "")))
        if self.maxMinutes.get() > 0:
            args.append("--max-minutes %g" % self.maxMinutes.get())
        if self.initModel.get() is not None:
            args.append("--init-model %s" % quote(self.initModel.get().getPath()))
        if not self.shapeCheck.get():
            args.append("--no-shape-check")
        args.append("--annotations %s" % ("complete" if self.allAnnotated.get() else "partial"))
        # A checkpoint here means this step is being re-run by "Continue": a
        # restart wipes the run's folder first.
        if os.path.exists(os.path.join(self._modelDir(), model_folder.CHECKPOINT_NAME)):
            args.append("--resume")
        args.append(self._gpusArg())
        self._runCore("train", *args)

    def createOutputStep(self):
        model = EtPickerModel()
        model.setFromConfig(self._modelDir(), model_folder.read_config(self._modelDir()))
        model.setBoxSizes([(p.get().getBoxSize() or 0) * p.get().getSamplingRate()
                           for p in self.inputCoordinates])
        self._defineOutputs(**{OUTPUT_MODEL: model})
        self._defineSourceRelation(self.inputTomograms, model)
        for pointer in self.inputCoordinates:
            self._defineSourceRelation(pointer, model)

    # --------------------------- UTILS ---------------------------------------
    def _classNames(self):
        return convert.classNames(list(self.inputCoordinates))

    def _gpusArg(self):
        """``--gpus`` with several GPUs in the list: one training process on each (torch
        DDP, launched by the core); '' for one GPU or the CPU."""
        gpus = self.getGpuList() if self._useGpu() else []
        return "--gpus %s" % ",".join(map(str, gpus)) if len(gpus) > 1 else ""

    def _modelDir(self):
        return self._getExtraPath("model")

    def _writeInputs(self, kind, tomoSet, coordSets, names):
        # A tomogram without annotations would teach its particles as background.
        annotated = set().union(*(coordSet.getTSIds() for coordSet in coordSets))
        every = convert.tomogramsList(tomoSet)
        tomograms = [t for t in every if t.getTsId() in annotated]
        skipped = sorted(t.getTsId() for t in every if t.getTsId() not in annotated)
        if skipped:
            self.info("%s tomograms left out, no coordinates on them: %s"
                      % (kind.capitalize(), ", ".join(skipped)))
        convert.writeTomogramCsvs(self._getExtraPath(kind, "coords"), tomograms,
                                  coordSets, names)
        for tomo in tomograms:
            convert.tomogramPath(tomo, self._getExtraPath(kind, "tomos"))

    def _inputFiles(self, kind, folder, extension):
        directory = self._getExtraPath(kind, folder)
        return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                      if f.endswith(extension))

    # --------------------------- INFO ----------------------------------------
    def _validate(self):
        tomograms = self.inputTomograms.get()
        coordSets = [p.get() for p in self.inputCoordinates]
        errors = self._emptySetErrors([tomograms, self.valTomograms.get()], "tomograms")
        errors += self._emptySetErrors(coordSets, "coordinates")
        if errors:
            return errors
        if not coordSets:
            return ["Give at least one set of coordinates (one per class)."]
        errors += self._tsIdErrors(tomograms) + self._tsIdErrors(self.valTomograms.get())
        errors += self._classNameErrors(self._classNames())
        tsIds = set(tomograms.getUniqueValues("_tsId"))
        for coordSet in coordSets:
            if not tsIds.intersection(coordSet.getTSIds()):
                errors.append("The coordinates %s belong to none of the training "
                              "tomograms (no shared tomogram id)." % coordSet.getNameId())
        if self.valTomograms.get() is not None:
            valSets = [p.get() for p in self.valCoordinates]
            if len(valSets) != len(coordSets):
                errors.append("Give one validation set of coordinates per class (%d), in "
                              "the training order; got %d." % (len(coordSets), len(valSets)))
            errors += self._emptySetErrors(valSets, "validation coordinates")
            valRate = self.valTomograms.get().getSamplingRate()
            if not settings.voxel_sizes_agree([valRate, tomograms.getSamplingRate()]):
                errors.append("Validation tomograms (%.3f Å/voxel) must have the training "
                              "tomograms' sampling rate (%.3f Å/voxel)."
                              % (valRate, tomograms.getSamplingRate()))
        elif not 0 < self.valFraction.get() < 1:
            errors.append("The validation fraction must lie between 0 and 1.")
        errors += self._settingErrors()
        initModel = self.initModel.get()
        if initModel is not None:
            errors += self._modelErrors(initModel)
            errors += self._voxelSizeErrors(tomograms, initModel)
        errors += diameterErrors(self.diameters.get(), len(coordSets),
                                 tomograms.getSamplingRate())
        try:
            particles = parseDiameters(self.particleDiameters.get())
        except ValueError as error:
            return errors + [str(error).replace("Diameters", "Particle diameters")]
        if len(particles) not in (0, 1, len(coordSets)):
            errors.append("Give one particle diameter for all classes or one per class (%d); got %d."
                          % (len(coordSets), len(particles)))
        return errors

    def _particleDiametersAngstrom(self):
        """Particle diameter per class in Å: the form's, else each set's box size (0 unknown)."""
        typed = parseDiameters(self.particleDiameters.get())
        if typed:
            return typed
        return [(p.get().getBoxSize() or 0) * p.get().getSamplingRate() for p in self.inputCoordinates]

    def _particleDiameterArgs(self, samplingRate):
        """``--particle-diameter`` in voxels; '' where a size is unknown (the core then uses
        its label default)."""
        diameters = self._particleDiametersAngstrom()
        if not diameters or min(diameters) <= 0:
            return ""
        return "--particle-diameter %s" % ",".join("%.4g" % (d / samplingRate) for d in diameters)

    def _settingErrors(self):
        """The core's own checks of patch, padding and widths, as form messages."""
        try:
            if self.patch.get() is not None:
                patch = settings.check_patch(self.patch.get())
                if self.pad.get() is not None:
                    settings.check_pad(self.pad.get(), patch)
            if self.widths.get():
                parts = self.widths.get().replace(" ", "").split(",")
                if not all(p.isdigit() for p in parts):
                    raise InputError("the network widths must be whole numbers, e.g. 24,48,72,108; "
                                     "got '%s'" % self.widths.get())
                settings.check_widths([int(p) for p in parts])
        except InputError as error:
            message = str(error)
            return ["%s%s." % (message[:1].upper(), message[1:])]
        return []

    def _warnings(self):
        """Asked before launching: particles of a size the network was not measured on, and a
        validation set too thin to choose on."""
        return self._sizeWarnings() + self._validationWarnings()

    def _sizeWarnings(self):
        tomograms = self.inputTomograms.get()
        try:
            diameters = self._particleDiametersAngstrom()
        except ValueError:
            return []  # _validate reports it
        if tomograms is None or not diameters or min(diameters) <= 0:
            return []
        samplingRate = tomograms.getSamplingRate()
        lines = recipe.size_warnings([d / samplingRate for d in diameters], samplingRate)
        return [line.replace("warning: particles", "Particles", 1) + "." for line in lines]

    def _validationWarnings(self):
        if self.valTomograms.get() is not None:
            tomograms, share = self.valTomograms.get(), 1.0
            coordSets = [p.get() for p in self.valCoordinates]
        else:
            tomograms, share = self.inputTomograms.get(), self.valFraction.get()
            coordSets = [p.get() for p in self.inputCoordinates]
        if tomograms is None or None in coordSets:
            return []  # _validate reports it
        tsIds = set(tomograms.getUniqueValues("_tsId"))
        warnings = []
        for name, coordSet in zip(self._classNames(), coordSets):
            count = int(round(share * sum(1 for coord in coordSet if coord.getTomoId() in tsIds)))
            if count < MIN_VAL_PARTICLES:
                warnings.append("Validation has %s%d particle(s) of %s (fewer than %d): the epoch kept "
                                "and the score threshold of %s are chosen on them and will be noisy. "
                                "Give more validation particles."
                                % ("" if share == 1.0 else "about ", count, name,
                                   MIN_VAL_PARTICLES, name))
        return warnings

    def _summary(self):
        summary = ["Classes: %s." % ", ".join(self._classNames())]
        if self.hasAttribute(OUTPUT_MODEL):
            summary.append("Model: %s" % getattr(self, OUTPUT_MODEL))
        configFile = os.path.join(self._modelDir(), model_folder.CONFIG_NAME)
        if os.path.exists(configFile):  # what the automatic recipe chose, once training started
            config = model_folder.read_config(self._modelDir())
            training = config.get("training", {})
            summary.append("Recipe (%s): patch %s, batch %s, widths %s, learning rate %s, label "
                           "diameters %s voxels; chosen automatically: %s."
                           % (config.get("recipe", {}).get("device", "?"), config.get("patch"),
                              training.get("batch"), ",".join(map(str, config.get("widths", []))),
                              training.get("lr"), ",".join(map(str, config.get("diameters", []))),
                              ", ".join(config.get("recipe", {}).get("automatic", [])) or "nothing"))
        return summary

    def _methods(self):
        historyFile = os.path.join(self._modelDir(), model_folder.HISTORY_NAME)
        epochs = len(model_folder.read_history(historyFile)) if os.path.exists(historyFile) else self.epochs.get()
        return ["A 3D ResUNet was trained on weak %s labels%s with etpicker [Liu2024]."
                % (LABEL_TYPES[self.labelType.get()], " for %d epochs" % epochs if epochs else "")]
