"""Names, defaults and versions of the etpicker plugin, each defined once."""

VERSION = "0.1.0"

# Managed environment of the core (torch, numpy, scipy, mrcfile).
ETPICKER_ENV_ACTIVATION = "ETPICKER_ENV_ACTIVATION"
ENV_NAME = "etpicker-%s" % VERSION
DEFAULT_ACTIVATION = "conda activate %s" % ENV_NAME
CORE_PYTHON_VERSION = "3.11"
CORE_REQUIREMENTS = ["torch==2.13.0", "numpy", "scipy", "mrcfile", "tqdm"]
INSTALLED_FLAG = "etpicker_env_installed"
CORE_MODULE = "etpicker.core"

# The model folder's files, label types, diameters and voxel-size rules live in the core's
# torch-free modules (core.model_folder, core.labels, core.settings), imported from there.

# Output names of the protocols (viewers and downstream code look them up).
OUTPUT_MODEL = "outputModel"
OUTPUT_LABELS = "outputLabels"
OUTPUT_COORDINATES_PREFIX = "outputCoordinates_"
OUTPUT_PRETRAINED = "outputPretrainedModel"
