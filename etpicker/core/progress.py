"""Progress of long steps (an epoch, picking a tomogram, fitting the shape checks): a bar on
a terminal, plain lines with the time left when the output is a log (Scipion's run log)."""
import sys
import time

from tqdm import tqdm

LOG_EVERY = 30.0  # seconds between two plain progress lines


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def tracked(iterable, total, description, units="batches"):
    """The items of `iterable`, reporting how many of `total` are done and the time left:
    through tqdm on stderr when it is a terminal, else a line on stdout every LOG_EVERY
    seconds (none for a step shorter than that)."""
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=description, unit=f" {units}", leave=False, dynamic_ncols=True)
        return
    started = last = time.monotonic()
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY and done < total:
            last = now
            left = (now - started) / done * (total - done)
            print(f"{description}: {done}/{total} {units} ({100 * done / total:.0f} %), about {_duration(left)} left",
                  flush=True)
