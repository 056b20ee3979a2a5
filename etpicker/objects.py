"""Scipion objects of etpicker."""
import os

import pyworkflow.object as pwobj
from pwem.objects import EMObject

from .core.model_folder import CONFIG_NAME, HISTORY_NAME, WEIGHTS_NAME


class EtPickerModel(EMObject):
    """A trained picking model: a folder with weights.pt, config.json and history.csv.

    The class names, voxel size (Å) and weak-label diameters (voxels) are copied
    from config.json so that the GUI shows them without reading the folder.
    """

    def __init__(self, path=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._path = pwobj.String(path)
        self._classes = pwobj.CsvList(pType=str)
        self._voxelSize = pwobj.Float()
        self._diameters = pwobj.CsvList(pType=float)
        self._boxSizes = pwobj.CsvList(pType=float)

    def getPath(self):
        return self._path.get()

    def setPath(self, path):
        self._path.set(path)

    def getConfigFile(self):
        return os.path.join(self.getPath(), CONFIG_NAME)

    def getWeightsFile(self):
        return os.path.join(self.getPath(), WEIGHTS_NAME)

    def getHistoryFile(self):
        return os.path.join(self.getPath(), HISTORY_NAME)

    def getClasses(self):
        return list(self._classes)

    def setClasses(self, names):
        self._classes.set(list(names))

    def getVoxelSize(self):
        """Voxel size (Å) of the tomograms the model was trained on."""
        return self._voxelSize.get()

    def setVoxelSize(self, voxelSize):
        self._voxelSize.set(voxelSize)

    def getDiameters(self):
        """Weak-label diameter of each class, in voxels."""
        return list(self._diameters)

    def setDiameters(self, diameters):
        self._diameters.set([float(d) for d in diameters])

    def getBoxSizes(self):
        """Box size (Å) of each class's training coordinates, 0 where unknown; empty for
        imported models. Picks inherit it."""
        return list(self._boxSizes)

    def setBoxSizes(self, boxSizes):
        self._boxSizes.set([float(b) for b in boxSizes])

    def setFromConfig(self, path, config):
        """Fill every field from a model folder and its parsed config.json."""
        self.setPath(path)
        self.setClasses(config["classes"])
        self.setVoxelSize(float(config["voxel_size"]))
        self.setDiameters(config["diameters"])

    def missingFiles(self):
        """The files a model folder needs for picking that are absent."""
        return [f for f in (self.getConfigFile(), self.getWeightsFile())
                if not os.path.exists(f)]

    def __str__(self):
        diameters = ", ".join("%g" % d for d in self.getDiameters())
        return "%s (classes: %s; voxel size %.2f Å; diameters %s voxels)" % (
            self.getClassName(), ", ".join(self.getClasses()) or "none",
            self.getVoxelSize() or 0.0, diameters or "unknown")


class EtPickerPretrainedModel(EMObject):
    """A network pre-trained without labels (the pretrain protocol): a folder with the
    encoder and decoder's weights.pt, config.json and history.csv, which the train
    protocol starts from (its initial model). It has no classes and picks nothing."""

    def __init__(self, path=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._path = pwobj.String(path)
        self._voxelSize = pwobj.Float()
        self._objective = pwobj.String()

    def getPath(self):
        return self._path.get()

    def getConfigFile(self):
        return os.path.join(self.getPath(), CONFIG_NAME)

    def getHistoryFile(self):
        return os.path.join(self.getPath(), HISTORY_NAME)

    def getVoxelSize(self):
        """Voxel size (Å) of the tomograms it was pre-trained on."""
        return self._voxelSize.get()

    def getObjective(self):
        return self._objective.get()

    def setFromConfig(self, path, config):
        self._path.set(path)
        self._voxelSize.set(float(config["voxel_size"]))
        self._objective.set(config["objective"])

    def missingFiles(self):
        return [f for f in (self.getConfigFile(), os.path.join(self.getPath(), WEIGHTS_NAME))
                if not os.path.exists(f)]

    def __str__(self):
        return "%s (pre-trained by %s; voxel size %.2f Å)" % (
            self.getClassName(), self.getObjective(), self.getVoxelSize() or 0.0)
