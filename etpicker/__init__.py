"""etpicker: weakly supervised 3D particle picking (the DeepETPicker method) for Scipion.

The Scipion side (this package minus ``core``) never imports torch; the core
(``etpicker.core``) runs as ``python -m etpicker.core`` in its own environment.
"""
import os
import shlex
import sys

from .constants import (VERSION, ETPICKER_ENV_ACTIVATION, DEFAULT_ACTIVATION, ENV_NAME,
                        CORE_PYTHON_VERSION, CORE_REQUIREMENTS, INSTALLED_FLAG, CORE_MODULE)

__version__ = VERSION
_logo = "etpicker_logo.png"
_references = ["Liu2024"]

try:
    import pwem
except ImportError:
    # The core's environment has no Scipion, yet `python -m etpicker.core`
    # imports this package first: it must import cleanly there.
    pwem = None

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if pwem is not None:
    from pyworkflow.utils import Environ

    class Plugin(pwem.Plugin):
        @classmethod
        def _defineVariables(cls):
            cls._defineVar(ETPICKER_ENV_ACTIVATION, DEFAULT_ACTIVATION,
                           description="Shell command that activates the environment of "
                                       "etpicker's core (torch). Empty: run the core with "
                                       "Scipion's own Python interpreter.")

        @classmethod
        def getActivation(cls):
            return (cls.getVar(ETPICKER_ENV_ACTIVATION) or "").strip()

        @classmethod
        def getEnviron(cls):
            environ = Environ(os.environ)
            if cls.getActivation():
                # Scipion's PYTHONPATH would leak its own numpy & co. into the core's env.
                environ.pop("PYTHONPATH", None)
            else:
                # The current interpreter must import this very plugin's core.
                environ.update({"PYTHONPATH": _PACKAGE_PARENT}, position=Environ.BEGIN)
            return environ

        @classmethod
        def getProgram(cls, args, gpus=True):
            """The command line that runs ``python -m etpicker.core <args>``.

            With ``gpus``, pyworkflow replaces ``%(GPU)s`` with the protocol's GPU
            list and %-formats the whole command, so literal % in args are doubled.
            """
            cuda = "CUDA_VISIBLE_DEVICES=%(GPU)s " if gpus else ""
            if gpus:
                args = args.replace("%", "%%")
            activation = cls.getActivation()
            if not activation:
                return "%s%s -m %s %s" % (cuda, shlex.quote(sys.executable), CORE_MODULE, args)
            prefix = ("%s %s" % (cls._condaInit(), activation)).strip()
            return "%s && %spython -m %s %s" % (prefix, cuda, CORE_MODULE, args)

        @classmethod
        def _condaInit(cls):
            """CONDA_ACTIVATION_CMD ready to be followed by a command ('' when unset)."""
            condaInit = (cls.getCondaActivationCmd() or "").strip()
            if condaInit and not condaInit.endswith(("&&", ";")):
                condaInit += " &&"
            return condaInit

        @classmethod
        def runCore(cls, protocol, args, gpus=True):
            """Run one core subcommand from a protocol step (raises on failure)."""
            protocol.runJob(cls.getProgram(args, gpus), "", env=cls.getEnviron(),
                            numberOfMpi=1, numberOfThreads=1)

        @classmethod
        def _coreSource(cls):
            """What pip installs into the core's env: this source tree when it is one
            (a --devel install), else the same release of the distribution."""
            if os.path.exists(os.path.join(_PACKAGE_PARENT, "setup.py")):
                # editable: a "git pull" of the tree updates the core's env too
                return "-e %s" % shlex.quote(_PACKAGE_PARENT)
            return "scipion-em-etpicker==%s" % VERSION

        @classmethod
        def defineBinaries(cls, env):
            condaInit = cls._condaInit()
            steps = [
                condaInit,
                "conda create -y -n %s python=%s &&" % (ENV_NAME, CORE_PYTHON_VERSION),
                "conda activate %s &&" % ENV_NAME,
                # PyPI's torch wheel: CUDA-enabled on Linux x86-64, CPU-only elsewhere.
                "pip install %s &&" % " ".join(CORE_REQUIREMENTS),
                # --no-deps: the core needs none of the Scipion-side dependencies.
                "pip install --no-deps %s &&" % cls._coreSource(),
                "touch %s" % INSTALLED_FLAG,
            ]
            command = " ".join(step for step in steps if step)
            env.addPackage("etpicker", version=VERSION, tar="void.tgz",
                           commands=[(command, INSTALLED_FLAG)],
                           # conda need not be on PATH when CONDA_ACTIVATION_CMD sets it up
                           neededProgs=[] if condaInit else ["conda"], default=True)
