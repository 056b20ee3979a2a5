"""etpicker core: weakly supervised 3D particle picking (DeepETPicker method) in PyTorch.

Runs without Scipion (`python -m etpicker.core --help`); the plugin talks to it only
through files and the command line.
"""

__version__ = "0.1.0"
