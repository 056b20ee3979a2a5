"""Import model: an existing etpicker model folder -> EtPickerModel."""
import os
import shutil

from pyworkflow.protocol import params

from ..constants import OUTPUT_MODEL
from ..core import model_folder  # torch-free: the model folder's contract, checked as the core does
from ..core.errors import InputError
from ..objects import EtPickerModel
from .protocol_base import EtPickerProtBase


class EtPickerProtImportModel(EtPickerProtBase):
    """Imports a trained etpicker model folder (config.json + weights.pt) into the
    project, e.g. a model trained in another project or shared by a colleague."""
    _label = "import model"
    _possibleOutputs = {OUTPUT_MODEL: EtPickerModel}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("modelDir", params.PathParam, important=True,
                      label="Model folder",
                      help="Folder with %s and %s (%s is kept when present). It is copied "
                           "into the project." % (model_folder.CONFIG_NAME, model_folder.WEIGHTS_NAME,
                                                  model_folder.HISTORY_NAME))

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep)

    def importStep(self):
        target = self._getExtraPath("model")
        shutil.copytree(self.modelDir.get(), target, dirs_exist_ok=True)
        model = EtPickerModel()
        model.setFromConfig(target, model_folder.read_checked_config(target))
        self._defineOutputs(**{OUTPUT_MODEL: model})

    def _validate(self):
        folder = self.modelDir.get() or ""
        if not os.path.isdir(folder):
            return ["The model folder '%s' does not exist." % folder]
        missing = [f for f in (model_folder.CONFIG_NAME, model_folder.WEIGHTS_NAME)
                   if not os.path.exists(os.path.join(folder, f))]
        if missing:
            return ["The model folder %s is missing %s: it is not an etpicker model."
                    % (folder, ", ".join(missing))]
        try:
            model_folder.read_checked_config(folder)
        except InputError as error:
            return ["This is not a model etpicker can pick with: %s" % error]
        return []

    def _summary(self):
        if self.hasAttribute(OUTPUT_MODEL):
            return ["Imported from %s: %s" % (self.modelDir.get(), getattr(self, OUTPUT_MODEL))]
        return ["Model folder: %s" % self.modelDir.get()]

    def _methods(self):
        return ["A trained etpicker model [Liu2024] was imported."]
