"""What etpicker's protocols share: GPU settings, running the core, input checks."""
import shlex

from pwem.protocols import EMProtocol
from pyworkflow.object import Pointer
from pyworkflow.protocol import params
from tomo.protocols import ProtTomoBase

from .. import Plugin, convert
from ..core import io  # torch-free, like the rules below: file conventions shared with the core
from ..core.labels import LABEL_TYPES, MIN_DIAMETER
from ..core.settings import voxel_sizes_agree


class EtPickerProtBase(EMProtocol, ProtTomoBase):
    """Base of etpicker's protocols (not listed in the GUI: it has no _label)."""

    def _defineGpuParams(self, form):
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU",
                       help="Run the network on a GPU when one is available (the core "
                            "falls back to the CPU otherwise). No: always the CPU.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="GPU IDs",
                       help="GPU to use (the first one listed is used), e.g. 0.")

    def _defineLabelParams(self, form):
        """Label type and diameters: weak labels and train paint the same masks."""
        form.addParam("labelType", params.EnumParam, choices=list(LABEL_TYPES), default=0,
                      label="Label type",
                      help="tball (truncated ball, recommended), ball, cubic or gaussian.")
        form.addParam("diameters", params.StringParam, default="",
                      label="Label diameter (Å)",
                      help="Weak-label diameter in Å: one value for all classes or one per "
                           "class (comma separated), converted to voxels with the "
                           "tomograms' sampling rate. A constant 7-11 voxels, smaller than "
                           "the particle, works well. Empty: the core's default in voxels.")

    def _useGpu(self):
        return bool(self.getAttributeValue(params.USE_GPU, False))

    def _setsVisibleGpus(self):
        """Whether the core's command sets CUDA_VISIBLE_DEVICES: pyworkflow fills in the
        GPU list only when there is one (an empty list would leave %(GPU)s in the shell)."""
        return self._useGpu() and bool(self.getGpuList())

    def _deviceArg(self):
        # Under CUDA_VISIBLE_DEVICES the chosen GPU is the core's first device.
        return "--device %s" % ("auto" if self._useGpu() else "cpu")

    def _runCore(self, subcommand, *args):
        """Run ``python -m etpicker.core subcommand args`` (already quoted strings)."""
        Plugin.runCore(self, " ".join((subcommand,) + args), gpus=self._setsVisibleGpus())

    # --------------------------- checks shared by _validate -------------------
    @staticmethod
    def _emptySetErrors(sets, what):
        return ["The input %s %s is empty." % (what, s.getObjLabel() or s.getNameId())
                for s in sets if s is not None and s.getSize() == 0]

    @staticmethod
    def _tsIdErrors(tomograms):
        """Tomograms reach the core as <tsId>.mrc: ids must exist and differ."""
        if tomograms is None:
            return []
        tsIds = [tomo.getTsId() for tomo in tomograms.iterItems()]
        label = tomograms.getObjLabel() or tomograms.getNameId()
        if any(not tsId for tsId in tsIds):
            return ["Some tomograms of %s have no tomogram id (tsId)." % label]
        shared = io.repeated(tsIds)
        if shared:
            return ["Tomograms of %s share the tomogram id(s) %s: give each tomogram its own."
                    % (label, ", ".join(shared))]
        return []

    @staticmethod
    def _classNameErrors(names):
        """Classes become output and file names (convert.safeName): those must differ."""
        clashing = set(io.repeated(convert.safeName(name) for name in names))
        clashes = sorted(name for name in names if convert.safeName(name) in clashing)
        if clashes:
            return ["The class names %s differ only in characters other than letters, digits "
                    "and _: relabel the coordinate sets." % ", ".join(clashes)]
        return []

    @staticmethod
    def _modelErrors(model):
        missing = model.missingFiles()
        if missing:
            return ["The model folder %s is missing %s: train a model or import a "
                    "complete model folder." % (model.getPath(), ", ".join(missing))]
        return []

    @staticmethod
    def _voxelSizeErrors(tomograms, model):
        voxelSize, samplingRate = model.getVoxelSize(), tomograms.getSamplingRate()
        if not voxel_sizes_agree([samplingRate, voxelSize]):
            return ["The tomograms are at %.3f Å/voxel but the model was trained at "
                    "%.3f Å/voxel: rescale (bin) the tomograms to %.3f Å/voxel, or "
                    "train a model on tomograms at %.3f Å/voxel."
                    % (samplingRate, voxelSize, voxelSize, samplingRate)]
        return []


def linkInputs(protocol, inputs):
    """Point a new protocol's inputs at earlier runs' outputs, naming the output (downstream
    runs need the name): ``{attribute: (run, output name) or [(run, output name), ...]}``."""
    for attribute, value in inputs.items():
        if isinstance(value, list):
            for producer, name in value:
                getattr(protocol, attribute).append(Pointer(producer, extended=name))
        else:
            producer, name = value
            getattr(protocol, attribute).set(producer)
            getattr(protocol, attribute).setExtended(name)


def quote(value):
    """One shell-safe command-line word."""
    return shlex.quote(str(value))


def quoteAll(values):
    return " ".join(quote(v) for v in values)


def parseDiameters(text):
    """Diameters (Å) typed as "120" or "120, 90"; [] when empty."""
    parts = [p for p in (text or "").replace(",", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError("Diameters must be numbers in Å, e.g. 120 or 120, 90; got '%s'."
                         % text)
    if any(v <= 0 for v in values):
        raise ValueError("Diameters must be positive (Å); got '%s'." % text)
    return values


def diameterErrors(text, nClasses, samplingRate):
    """_validate messages for a diameters field (Å)."""
    try:
        values = parseDiameters(text)
    except ValueError as error:
        return [str(error)]
    if len(values) not in (0, 1, nClasses):
        return ["Give one diameter for all classes or one per class (%d); got %d."
                % (nClasses, len(values))]
    tooSmall = [v for v in values if round(v / samplingRate) < MIN_DIAMETER]
    if tooSmall:
        return ["A diameter of %g Å is under %d voxels at %.3f Å/voxel: the weak labels "
                "would be too small to learn from." % (tooSmall[0], MIN_DIAMETER, samplingRate)]
    return []


def diameterArgs(text, samplingRate):
    """``--diameter`` for the core, in whole voxels; '' keeps the core's default."""
    values = parseDiameters(text)
    if not values:
        return ""
    return "--diameter %s" % ",".join(str(max(1, round(v / samplingRate))) for v in values)
