"""`python -m etpicker.core ...` with one of the core's module-level choices replaced by a
measured alternative (`MODULE.NAME=VALUE`: partial.RULE=self, adapt.SPECTRUM_MIN_STRENGTH=1),
so that a benchmark compares it with the shipped one through the same command line.

Usage: python bench/with_setting.py MODULE.NAME=VALUE SUBCOMMAND [options...]

Benchmarks name such a run CHOICE+MODULE.NAME=VALUE (`bench_adapt --methods
spectrum+adapt.SPECTRUM_MIN_STRENGTH=1`, `bench_accuracy --annotations
partial+partial.RULE=self`); `variant` reads that form.
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for etpicker.core

from etpicker.core import cli  # noqa: E402


def apply(setting):
    """Sets etpicker.core.MODULE.NAME to VALUE, read as the type of the value it replaces (a
    string, an int or a float)."""
    name, separator, value = setting.partition("=")
    module_name, _, attribute = name.rpartition(".")
    module = importlib.import_module(f"etpicker.core.{module_name}") if separator and module_name else None
    current = getattr(module, attribute, None)
    if module is None or type(current) not in (str, int, float):
        sys.exit(f"{setting!r} is not MODULE.NAME=VALUE naming a string or number setting of etpicker.core")
    setattr(module, attribute, type(current)(value))


def variant(choices):
    """An argparse type: one of `choices`, or CHOICE+MODULE.NAME=VALUE; gives the text
    unchanged (`split` takes it apart)."""
    def check(text):
        choice = split(text)[0]
        if choice not in choices:
            raise argparse.ArgumentTypeError(f"{text!r}: {choice!r} is not one of {', '.join(choices)}")
        return text
    return check


def split(text):
    """(choice, MODULE.NAME=VALUE or None) of a CHOICE[+MODULE.NAME=VALUE] text."""
    choice, _, setting = text.partition("+")
    return choice, setting or None


def run_name(text):
    """A file name for the run of a variant text."""
    return text.replace("+", "_").replace("=", "_")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} MODULE.NAME=VALUE SUBCOMMAND [options...]")
    apply(sys.argv[1])
    sys.exit(cli.main(sys.argv[2:]))
