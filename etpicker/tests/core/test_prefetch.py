import threading

import pytest

from etpicker.core.io import InputError
from etpicker.core.prefetch import prefetch


def _prefetch_threads():
    return [thread for thread in threading.enumerate() if thread.name == "etpicker-prefetch"]


def test_items_come_in_order_and_all_of_them():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch([])) == []


def test_an_error_while_preparing_is_raised_after_the_items_before_it():
    def batches():
        yield 1
        yield 2
        raise InputError("the tomogram contains NaN or infinite values")

    seen = []
    with pytest.raises(InputError, match="NaN"):
        for item in prefetch(batches()):
            seen.append(item)
    assert seen == [1, 2]
    assert not _prefetch_threads()


def test_stopping_early_ends_the_thread_and_prepares_only_a_few_items_ahead():
    prepared = []

    def batches():
        for index in range(1000):
            prepared.append(index)
            yield index

    items = prefetch(batches(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert not _prefetch_threads()
    assert len(prepared) <= 3 + 2 + 1  # consumed + queued + the one being put when stopped


def test_a_loop_that_breaks_ends_the_thread():
    # training breaks out of its batch loop at the time budget
    for item in prefetch(iter(range(1000))):
        if item == 5:
            break
    assert not _prefetch_threads()
