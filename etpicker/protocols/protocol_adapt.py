"""Adapt model: an etpicker model + unlabelled tomograms of a new dataset -> a new model."""
import os

from pyworkflow.protocol import params

from .. import convert
from ..constants import OUTPUT_MODEL
from ..core import adapt_settings, model_folder  # torch-free: the core's names and defaults
from ..objects import EtPickerModel
from .protocol_base import EtPickerProtBase, quote, quoteAll


class EtPickerProtAdapt(EtPickerProtBase):
    """Carries a trained model to tomograms of another dataset (another microscope,
    defocus, dose, tilt range, other proteins around) without annotating them: the model
    is fine-tuned on its own training data, which its folder recorded, together with the
    unlabelled new tomograms. The adapted model picks like any other.
    """
    _label = "adapt model"
    _possibleOutputs = {OUTPUT_MODEL: EtPickerModel}

    def _defineParams(self, form):
        self._defineGpuParams(form)
        form.addSection(label="Input")
        form.addParam("inputModel", params.PointerParam, pointerClass="EtPickerModel", important=True,
                      label="Model to adapt",
                      help="A model trained by etpicker. Its folder records its training tomograms and "
                           "a copy of their annotations; a model trained before models recorded them "
                           "needs its training data below.")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms", important=True,
                      label="New tomograms (unlabelled)",
                      help="Tomograms of the new dataset, at the model's voxel size; no annotations needed.")
        form.addParam("sourceTomograms", params.PointerParam, pointerClass="SetOfTomograms", allowsNull=True,
                      label="Model's training tomograms (optional)",
                      help="Empty: those the model's folder recorded.")
        form.addParam("sourceCoordinates", params.MultiPointerParam, pointerClass="SetOfCoordinates3D",
                      allowsNull=True, condition="sourceTomograms",
                      label="Their annotations (one set per class)",
                      help="In the model's class order.")
        form.addSection(label="Adaptation")
        form.addParam("method", params.EnumParam, choices=list(adapt_settings.METHODS),
                      default=adapt_settings.METHODS.index(adapt_settings.DEFAULT_METHOD), label="Method",
                      help=adapt_settings.methods_help())
        form.addParam("maxMinutes", params.FloatParam, default=adapt_settings.DEFAULT_MINUTES,
                      label="Time budget (minutes)", help="Wall-clock budget of the whole adaptation.")
        form.addParam("seed", params.IntParam, default=0, label="Random seed")
        form.addParam("adversarialWeight", params.FloatParam, default=adapt_settings.DEFAULT_ADVERSARIAL_WEIGHT,
                      condition="method == %d" % adapt_settings.METHODS.index("dual-adversarial"),
                      expertLevel=params.LEVEL_ADVANCED, label="Adversarial weight (lambda)",
                      help="Weight of the reversed discriminator gradients.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep)
        self._insertFunctionStep(self.adaptStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS ---------------------------------------
    def convertInputStep(self):
        for tomo in convert.tomogramsList(self.inputTomograms.get()):
            convert.tomogramPath(tomo, self._getExtraPath("target"))
        if self.sourceTomograms.get() is not None:
            coordSets = [p.get() for p in self.sourceCoordinates]
            annotated = set().union(*(coordSet.getTSIds() for coordSet in coordSets))
            tomograms = [t for t in convert.tomogramsList(self.sourceTomograms.get()) if t.getTsId() in annotated]
            convert.writeTomogramCsvs(self._getExtraPath("source", "coords"), tomograms, coordSets,
                                      self.inputModel.get().getClasses())
            for tomo in tomograms:
                convert.tomogramPath(tomo, self._getExtraPath("source", "tomos"))

    def adaptStep(self):
        args = ["--model", quote(self.inputModel.get().getPath()),
                "--tomos", quoteAll(self._files("target", ".mrc")),
                "--out", quote(self._modelDir()),
                "--method", adapt_settings.METHODS[self.method.get()],
                "--max-minutes %g --seed %d" % (self.maxMinutes.get(), self.seed.get()),
                "--adversarial-weight %g" % self.adversarialWeight.get(),
                self._deviceArg()]
        if self.sourceTomograms.get() is not None:
            args += ["--source-tomos", quoteAll(self._files(os.path.join("source", "tomos"), ".mrc")),
                     "--source-coords", quoteAll(self._files(os.path.join("source", "coords"), ".csv"))]
        self._runCore("adapt", *args)

    def createOutputStep(self):
        model = EtPickerModel()
        model.setFromConfig(self._modelDir(), model_folder.read_config(self._modelDir()))
        model.setBoxSizes(self.inputModel.get().getBoxSizes())
        self._defineOutputs(**{OUTPUT_MODEL: model})
        self._defineSourceRelation(self.inputModel, model)
        self._defineSourceRelation(self.inputTomograms, model)

    # --------------------------- UTILS ---------------------------------------
    def _modelDir(self):
        return self._getExtraPath("model")

    def _files(self, folder, extension):
        directory = self._getExtraPath(folder)
        return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(extension))

    # --------------------------- INFO ----------------------------------------
    def _validate(self):
        model, tomograms = self.inputModel.get(), self.inputTomograms.get()
        errors = self._emptySetErrors([tomograms, self.sourceTomograms.get()], "tomograms")
        if errors:
            return errors
        errors += self._tsIdErrors(tomograms) + self._modelErrors(model) + self._voxelSizeErrors(tomograms, model)
        if self.sourceTomograms.get() is not None:
            coordSets = [p.get() for p in self.sourceCoordinates]
            if len(coordSets) != len(model.getClasses()):
                errors.append("Give one set of training coordinates per class of the model (%d: %s); got %d."
                              % (len(model.getClasses()), ", ".join(model.getClasses()), len(coordSets)))
            errors += self._emptySetErrors(coordSets, "coordinates")
        elif os.path.exists(model.getConfigFile()):
            problem = model_folder.training_data_problem(model.getPath(), model_folder.read_config(model.getPath()))
            if problem:
                errors.append("%s%s below." % (problem[:1].upper(), problem[1:]))
        if not self.maxMinutes.get() > 0:
            errors.append("The time budget must be positive (minutes).")
        return errors

    def _summary(self):
        summary = []
        if self.hasAttribute(OUTPUT_MODEL):
            summary.append("Adapted model: %s" % getattr(self, OUTPUT_MODEL))
            provenance = model_folder.read_config(self._modelDir()).get("adaptation", {})
            summary.append("Method %s, %s min, seed %s; source model %s."
                           % (provenance.get("method"), provenance.get("minutes"), provenance.get("seed"),
                              provenance.get("source_model")))
        return summary

    def _methods(self):
        return ["An etpicker model [Liu2024] was adapted to unlabelled tomograms by %s for at most %g minutes."
                % (adapt_settings.METHODS[self.method.get()], self.maxMinutes.get())]
