"""`python -m etpicker.core`: the core's command line."""
import sys

from .cli import main

sys.exit(main())
