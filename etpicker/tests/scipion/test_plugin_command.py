"""The one command builder, the managed environment's recipe and plugin discovery."""
import os
import subprocess
import sys

import pytest
from pyworkflow.utils.process import buildRunCommand

import etpicker
from etpicker import Plugin
from etpicker.constants import ETPICKER_ENV_ACTIVATION, DEFAULT_ACTIVATION, ENV_NAME

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


@pytest.fixture
def activation(monkeypatch):
    """Set ETPICKER_ENV_ACTIVATION as a user would, restoring the plugin afterwards."""
    monkeypatch.setattr(Plugin, "_condaActivationCmd", "")

    def set_to(value):
        if value is None:
            monkeypatch.delenv(ETPICKER_ENV_ACTIVATION, raising=False)
        else:
            monkeypatch.setenv(ETPICKER_ENV_ACTIVATION, value)
        Plugin._defineVariables()

    yield set_to
    monkeypatch.undo()
    Plugin._defineVariables()


def test_default_activation_is_the_versioned_conda_env(activation):
    activation(None)
    assert Plugin.getActivation() == DEFAULT_ACTIVATION == "conda activate %s" % ENV_NAME
    assert ENV_NAME == "etpicker-%s" % etpicker.__version__


def test_managed_env_command_activates_then_sets_gpus(activation):
    activation("conda activate etpicker-test")
    program = Plugin.getProgram("pick --model m --out 'a b'")
    assert program == ("conda activate etpicker-test && CUDA_VISIBLE_DEVICES=%(GPU)s "
                       "python -m etpicker.core pick --model m --out 'a b'")
    # pyworkflow fills the GPU list when it runs the job.
    command = buildRunCommand(program, "", 1, gpuList=[0, 1])
    assert "CUDA_VISIBLE_DEVICES=0,1 python -m etpicker.core" in command


def test_conda_init_command_is_joined_with_and(activation, monkeypatch):
    activation("conda activate etpicker-test")
    monkeypatch.setattr(Plugin, "_condaActivationCmd", 'eval "$(conda shell.bash hook)"')
    program = Plugin.getProgram("pick", gpus=False)
    assert program == ('eval "$(conda shell.bash hook)" && conda activate etpicker-test && '
                       "python -m etpicker.core pick")


def test_empty_activation_uses_this_interpreter_without_dangling_and(activation):
    activation("")
    program = Plugin.getProgram("train --lr 1e-3", gpus=False)
    assert program == "%s -m etpicker.core train --lr 1e-3" % sys.executable
    assert "&&" not in Plugin.getProgram("train", gpus=True)
    assert Plugin.getProgram("x", gpus=True).startswith("CUDA_VISIBLE_DEVICES=%(GPU)s ")


def test_percent_in_arguments_survives_gpu_formatting(activation):
    activation("")
    command = buildRunCommand(Plugin.getProgram("pick --out run%1", gpus=True), "", 1,
                              gpuList=[2])
    assert command.strip().endswith("pick --out run%1")
    assert "CUDA_VISIBLE_DEVICES=2 " in command


def test_an_empty_gpu_list_leaves_no_placeholder_in_the_command(activation):
    # "Use GPU" with the GPU IDs field cleared: pyworkflow fills no %(GPU)s then
    from etpicker.protocols import EtPickerProtPick
    activation("")
    prot = EtPickerProtPick(useGpu=True, gpuList="")
    command = buildRunCommand(Plugin.getProgram("--help --out run%1", gpus=prot._setsVisibleGpus()), "", 1,
                              gpuList=prot.getGpuList())
    assert "%" not in command.replace("run%1", "")
    result = subprocess.run(command, shell=True, env=Plugin.getEnviron(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert EtPickerProtPick(useGpu=True, gpuList="1")._setsVisibleGpus()


def test_empty_activation_command_runs_the_core(activation):
    activation("")
    environ = Plugin.getEnviron()
    assert environ["PYTHONPATH"].split(os.pathsep)[0] == REPO
    result = subprocess.run(Plugin.getProgram("--help", gpus=False), shell=True,
                            env=environ, cwd="/", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pick" in result.stdout and "train" in result.stdout


def test_managed_env_does_not_inherit_scipions_pythonpath(activation, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/scipion/site-packages")
    activation("conda activate etpicker-test")
    assert "PYTHONPATH" not in Plugin.getEnviron()


def test_define_binaries_creates_the_conda_env_with_torch_and_the_core():
    class RecordingEnv:
        def addPackage(self, name, **kwargs):
            self.package = (name, kwargs)

    env = RecordingEnv()
    Plugin.defineBinaries(env)
    name, kwargs = env.package
    (command, flag), = kwargs["commands"]
    assert name == "etpicker" and kwargs["neededProgs"] == ["conda"]
    assert "conda create -y -n %s python=3.11" % ENV_NAME in command
    assert "pip install torch==2.13.0 numpy scipy mrcfile tqdm" in command
    # In a source checkout the bundled core comes from this very tree, editable.
    assert "pip install --no-deps -e %s" % REPO in command
    assert command.endswith("touch %s" % flag)


def test_conda_need_not_be_on_the_path_when_an_activation_command_sets_it_up(monkeypatch):
    class RecordingEnv:
        def addPackage(self, name, **kwargs):
            self.package = (name, kwargs)

    monkeypatch.setattr(Plugin, "_condaActivationCmd", 'eval "$(/opt/conda/bin/conda shell.bash hook)"')
    env = RecordingEnv()
    Plugin.defineBinaries(env)
    name, kwargs = env.package
    assert kwargs["neededProgs"] == []
    assert kwargs["commands"][0][0].startswith('eval "$(/opt/conda/bin/conda shell.bash hook)" && conda create')


def test_core_imports_where_scipion_is_absent():
    code = ("import sys; sys.modules['pwem'] = None\n"
            "import etpicker, etpicker.core\n"
            "assert not hasattr(etpicker, 'Plugin')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_scipion_lists_the_four_protocols_and_the_model():
    from pyworkflow.plugin import Domain
    protocols = Domain.getProtocols()
    for name in ("EtPickerProtLabels", "EtPickerProtTrain", "EtPickerProtPick",
                 "EtPickerProtImportModel", "EtPickerProtAdapt"):
        assert name in protocols and protocols[name]._label
    assert "EtPickerModel" in Domain.getObjects()
