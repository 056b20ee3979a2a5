"""Where a picking's time goes: wall seconds per step, summed over its calls."""
import time
from contextlib import contextmanager


class Profile:
    """Seconds per named step (`step` blocks, and the waits of `waiting` loops), in order of
    first use."""

    def __init__(self):
        self.seconds = {}

    @contextmanager
    def step(self, name):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def waiting(self, iterable, name):
        """The items of `iterable`, the time spent waiting for each counted as `name` (with
        a background reader, the reading that did not overlap the consumer's work)."""
        iterator = iter(iterable)
        while True:
            with self.step(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def report(self):
        """'step 1.2 s (10 %), ...' over all steps."""
        total = sum(self.seconds.values()) or 1.0
        return ", ".join(f"{name} {seconds:.1f} s ({100 * seconds / total:.0f} %)"
                         for name, seconds in self.seconds.items())
