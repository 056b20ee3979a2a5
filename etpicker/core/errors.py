"""The one exception of bad user input, kept apart so that no module imports file
handling (or torch) just to raise it."""


class InputError(ValueError):
    """Bad user input; the command line prints it on one line and exits with status 2."""
