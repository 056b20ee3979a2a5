"""`python -m etpicker.core ...` with another of core/partial.py's measured rules for
partial annotations (partial.RULES) in place of the shipped one, so that bench_accuracy
compares them (`--annotations partial:RULE`) through the same command line.

Usage: python bench/partial_rule.py RULE SUBCOMMAND [options...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for etpicker.core

from etpicker.core import cli, partial  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in partial.RULES:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(partial.RULES)}}} SUBCOMMAND [options...]")
    partial.RULE = sys.argv[1]
    sys.exit(cli.main(sys.argv[2:]))
