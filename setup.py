"""scipion-em-etpicker: weakly supervised 3D particle picking for Scipion."""
import os
import re

from setuptools import setup, find_packages

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(HERE, "etpicker", "constants.py")) as handle:
        return re.search(r'^VERSION = "([^"]+)"', handle.read(), re.M).group(1)


def readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as handle:
        return handle.read()


setup(
    name="scipion-em-etpicker",
    version=version(),
    description="Weakly supervised 3D particle picking (DeepETPicker method) for Scipion",
    long_description=readme(),
    long_description_content_type="text/markdown",
    license="GPLv3+",
    python_requires=">=3.8",
    packages=find_packages(include=["etpicker", "etpicker.*"]),
    package_data={"etpicker": ["etpicker_logo.png", "protocols.conf", "templates/*.json.template"]},
    # Scipion's side only: torch lives in the core's own environment (extra "core").
    install_requires=["scipion-pyworkflow", "scipion-em", "scipion-em-tomo", "mrcfile", "numpy", "scipy",
                      "matplotlib"],
    extras_require={
        "core": ["torch", "numpy", "scipy", "mrcfile", "tqdm"],
        "test": ["pytest", "pytest-xdist", "scipion-em-reliontomo", "scipion-app"],
    },
    entry_points={"pyworkflow.plugin": "etpicker = etpicker"},
    classifiers=["Programming Language :: Python :: 3",
                 "Topic :: Scientific/Engineering :: Bio-Informatics"],
)
