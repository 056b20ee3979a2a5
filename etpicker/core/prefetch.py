"""Prepare the next batches on a background thread while the network works on this one.

Reading patches from a memory map, standardising them and painting their labels is CPU
work; on a GPU it would otherwise leave the device idle between batches. Items keep their
order, so results do not change; an error raised while preparing a batch is raised where
that batch would have been consumed.
"""

import queue
import threading

_END = object()


class _Failure:
    def __init__(self, error):
        self.error = error


def prefetch(iterable, depth=2):
    """Yield the items of `iterable` in order, at most `depth` of them prepared ahead.

    Stopping early stops the thread after the item it is preparing: closing the generator
    does, and so does a `for` loop that breaks or returns (it drops the generator)."""
    ready = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in iterable:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="etpicker-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
