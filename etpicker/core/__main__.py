"""`python -m etpicker.core`: the core's command line."""
import sys

from .cli import main
from .device import keep_freed_memory

keep_freed_memory()  # for the whole process: its large CPU tensors are freed and made again and again
sys.exit(main())
