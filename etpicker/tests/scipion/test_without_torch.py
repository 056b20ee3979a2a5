"""Scipion's side runs where torch is not installed, and installs what it imports."""
import ast
import json
import subprocess
import sys
from importlib import metadata

# Imports the plugin's Scipion side in a fresh interpreter where torch cannot be imported,
# and prints the source files of the etpicker modules it loaded.
WITHOUT_TORCH = """
import json, sys
sys.modules.update(torch=None)
import etpicker, etpicker.convert, etpicker.objects, etpicker.protocols, etpicker.viewers
print(json.dumps(sorted(m.__file__ for name, m in sys.modules.items()
                        if name.split('.')[0] == 'etpicker' and getattr(m, '__file__', None))))
"""


def _loaded_without_torch():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _imported_packages(path):
    """Top-level names of the third-party packages a source file imports."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "etpicker"}


def _install_requires():
    requires = metadata.requires("scipion-em-etpicker") or []
    return {requirement.split(";")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
            for requirement in requires if "extra ==" not in requirement}


def test_protocols_viewers_and_conversions_import_without_torch_and_install_what_they_import():
    files = _loaded_without_torch()
    assert any(path.endswith("protocol_train.py") for path in files)
    assert any(path.endswith("metrics.py") for path in files)  # the core's torch-free scoring
    distributions = metadata.packages_distributions()
    needed = {distribution.lower() for path in files for package in _imported_packages(path)
              for distribution in distributions.get(package, [package])}
    missing = needed - _install_requires()
    assert not missing, f"setup.py's install_requires lacks {sorted(missing)}"
