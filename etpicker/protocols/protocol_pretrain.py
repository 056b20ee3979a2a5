"""Pretrain: unlabelled tomograms -> a pre-trained network (EtPickerPretrainedModel) that
the train protocol starts from."""
import os

from pyworkflow.protocol import params

from .. import convert
from ..constants import OUTPUT_PRETRAINED
from ..core import model_folder, settings  # torch-free: the core's rules for these fields
from ..core.errors import InputError
from ..core.recipe import CPU_RECIPE, GPU_RECIPE
from ..objects import EtPickerPretrainedModel
from .protocol_base import EtPickerProtBase, quote, quoteAll

DEFAULTS = settings.PretrainSettings.defaults()  # the core's, for the form
OBJECTIVES = list(settings.PRETRAIN_OBJECTIVES)


class EtPickerProtPretrain(EtPickerProtBase):
    """Pre-trains etpicker's network on tomograms without any annotation (self-supervised),
    so that training from a few annotated particles starts from a network that already
    knows the sample: give the output to the train protocol as its initial model."""
    _label = "pretrain"
    _possibleOutputs = {OUTPUT_PRETRAINED: EtPickerPretrainedModel}

    def _defineParams(self, form):
        self._defineGpuParams(form)
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Tomograms (unlabelled)",
                      help="Tomograms of the sample, at the sampling rate training will use; no "
                           "annotation is needed. More tomograms give more to learn from.")
        form.addSection(label="Pre-training")
        form.addParam("objective", params.EnumParam, choices=OBJECTIVES,
                      default=OBJECTIVES.index(DEFAULTS["objective"]), label="Objective",
                      help="masked: the network restores blocks of the patch hidden by noise "
                           "(measured best). regions: it divides each patch into regions of similar "
                           "structure by its own features and learns to tell them apart (grey-level "
                           "and semantic contrast between two augmented views).")
        form.addParam("maxMinutes", params.FloatParam, default=15.0, label="Time budget (minutes)",
                      help="Wall-clock minutes of pre-training; the learning rate anneals over them. "
                           "0: no budget (the epochs below).")
        form.addParam("epochs", params.IntParam, default=DEFAULTS["epochs"], expertLevel=params.LEVEL_ADVANCED,
                      label="Epochs", help="Epochs of %d steps each, when there is no time budget."
                                           % DEFAULTS["steps_per_epoch"])
        form.addParam("patch", params.IntParam, allowsNull=True, expertLevel=params.LEVEL_ADVANCED,
                      label="Patch size (voxels) (optional)",
                      help="Edge of the cubic patch, a multiple of 8. Empty: training's automatic one "
                           "(%d on a CPU, %d on a GPU)." % (CPU_RECIPE["patch"], GPU_RECIPE["patch"]))
        form.addParam("widths", params.StringParam, default="", expertLevel=params.LEVEL_ADVANCED,
                      label="Network widths",
                      help="Channels of the 4 network levels; training from this network takes them. "
                           "Empty: automatic (%s on a CPU, %s on a GPU)."
                           % (",".join(map(str, CPU_RECIPE["widths"])), ",".join(map(str, GPU_RECIPE["widths"]))))
        form.addParam("seed", params.IntParam, default=DEFAULTS["seed"], expertLevel=params.LEVEL_ADVANCED,
                      label="Random seed")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep)
        self._insertFunctionStep(self.pretrainStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS ---------------------------------------
    def convertInputStep(self):
        for tomo in convert.tomogramsList(self.inputTomograms.get()):
            convert.tomogramPath(tomo, self._getExtraPath("tomos"))

    def pretrainStep(self):
        folder = self._getExtraPath("tomos")
        tomos = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".mrc"))
        args = ["--tomos", quoteAll(tomos), "--out", quote(self._modelDir()),
                "--objective", OBJECTIVES[self.objective.get()],
                # Scipion's sampling rate, not the MRC headers (often wrong after import)
                "--voxel-size %g" % self.inputTomograms.get().getSamplingRate(),
                "--epochs %d --seed %d" % (self.epochs.get(), self.seed.get()), self._deviceArg()]
        if self.maxMinutes.get() > 0:
            args.append("--max-minutes %g" % self.maxMinutes.get())
        if self.patch.get() is not None:
            args.append("--patch %d" % self.patch.get())
        if self.widths.get():
            args.append("--widths %s" % quote(self.widths.get().replace(" ", "")))
        self._runCore("pretrain", *args)

    def createOutputStep(self):
        model = EtPickerPretrainedModel()
        model.setFromConfig(self._modelDir(), model_folder.read_init_config(self._modelDir()))
        self._defineOutputs(**{OUTPUT_PRETRAINED: model})
        self._defineSourceRelation(self.inputTomograms, model)

    def _modelDir(self):
        return self._getExtraPath("pretrained")

    # --------------------------- INFO ----------------------------------------
    def _validate(self):
        errors = self._emptySetErrors([self.inputTomograms.get()], "tomograms")
        errors += self._tsIdErrors(self.inputTomograms.get())
        try:
            settings.PretrainSettings(patch=self.patch.get(), epochs=self.epochs.get(),
                                      widths=[int(p) for p in self.widths.get().split(",")]
                                      if self.widths.get() else None)
        except ValueError:
            errors.append("The network widths must be 4 whole numbers, e.g. 16,32,48,64; got '%s'."
                          % self.widths.get())
        except InputError as error:
            message = str(error)
            errors.append("%s%s." % (message[:1].upper(), message[1:]))
        return errors

    def _summary(self):
        if self.hasAttribute(OUTPUT_PRETRAINED):
            return ["Pre-trained network: %s" % getattr(self, OUTPUT_PRETRAINED)]
        return ["Objective: %s." % OBJECTIVES[self.objective.get()]]

    def _methods(self):
        return ["etpicker's 3D ResUNet [Liu2024] was pre-trained without labels on %d tomograms "
                "(objective: %s)." % (self.inputTomograms.get().getSize(), OBJECTIVES[self.objective.get()])]
