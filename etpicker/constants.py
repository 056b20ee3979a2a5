"""Names, defaults and versions of the etpicker plugin, each defined once."""

VERSION = "0.1.0"

# Managed environment of the core (torch, numpy, scipy, mrcfile).
ETPICKER_ENV_ACTIVATION = "ETPICKER_ENV_ACTIVATION"
ENV_NAME = "etpicker-%s" % VERSION
DEFAULT_ACTIVATION = "conda activate %s" % ENV_NAME
CORE_PYTHON_VERSION = "3.11"
CORE_REQUIREMENTS = ["torch==2.13.0", "numpy", "scipy", "mrcfile"]
INSTALLED_FLAG = "etpicker_env_installed"
CORE_MODULE = "etpicker.core"

# Files of a model folder (docs/DESIGN.md).
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "weights.pt"
MODEL_HISTORY = "history.csv"
MODEL_CHECKPOINT = "checkpoint.pt"
# What config.json must hold for picking: the core's pick.CONFIG_KEYS.
MODEL_CONFIG_KEYS = ("classes", "diameters", "voxel_size", "widths", "patch", "pad")

# Core CLI choices.
LABEL_TYPES = ["tball", "ball", "cubic", "gaussian"]
MIN_DIAMETER = 3  # voxels, the smallest weak label: the core's labels.MIN_DIAMETER
# Fewer validation particles of a class than this make the epoch kept and the class's
# score threshold noisy: the core's train.MIN_VAL_PARTICLES.
MIN_VAL_PARTICLES = 20

# Output names of the protocols (viewers and downstream code look them up).
OUTPUT_MODEL = "outputModel"
OUTPUT_LABELS = "outputLabels"
OUTPUT_COORDINATES_PREFIX = "outputCoordinates_"

# Relative tolerance when comparing a tomogram's voxel size with the model's: the core's
# io.VOXEL_SIZE_TOLERANCE.
VOXEL_SIZE_TOLERANCE = 0.01
