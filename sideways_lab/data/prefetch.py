"""Background-thread prefetching of batches.

A producer thread pulls items from the source iterator into a bounded queue of
``buffer_size`` items while the consumer (the training loop) works on the
previous batch.  NumPy, PyAV and most of NumPy's heavy kernels release the GIL,
so the preparation of batch ``k + 1`` overlaps with step ``k``.

Guarantees:

* order is preserved and every item is delivered exactly once;
* an exception raised by the source is re-raised in the consumer, at the
  position where it happened (items produced before it are delivered first);
* nothing hangs: the producer waits on the queue with a timeout and checks a
  stop flag, so :meth:`Prefetcher.close` (also called on garbage collection,
  ``with`` exit, or when a ``for`` loop breaks and drops the iterator) stops it
  promptly, and the thread is a daemon, so it never keeps the interpreter
  alive.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, Optional, TypeVar

from sideways_lab.data import _checks

T = TypeVar("T")

_POLL_SECONDS = 0.05


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: "queue.Queue", stop: threading.Event, item) -> bool:
    """Blocks until ``item`` is queued (True) or ``stop`` is set (False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _produce(source, q: "queue.Queue", stop: threading.Event) -> None:
    try:
        for item in source:
            if not _put(q, stop, item):
                break
        else:
            _put(q, stop, _End())
    except BaseException as err:  # noqa: BLE001 - forwarded to the consumer.
        _put(q, stop, _Failure(err))
    finally:
        close = getattr(source, "close", None)
        if stop.is_set() and callable(close):
            try:
                close()
            except Exception:  # pragma: no cover
                pass


class Prefetcher(Iterator[T]):
    """Iterator over ``iterable`` whose items are computed on a background thread.

    Use :func:`prefetch` to build one.  Also a context manager.
    """

    def __init__(self, iterable: Iterable[T], buffer_size: int = 2):
        self.buffer_size = _checks.positive_int(buffer_size, "buffer_size")
        try:
            source = iter(iterable)
        except TypeError:
            raise TypeError("`iterator` must be iterable, got "
                            f"{type(iterable).__name__}.") from None
        self._queue: "queue.Queue" = queue.Queue(maxsize=self.buffer_size)
        self._stop = threading.Event()
        self._done = False
        # The thread must not reference `self`, so that dropping the Prefetcher
        # garbage-collects it and `__del__` stops the thread.
        self._thread = threading.Thread(target=_produce,
                                        args=(source, self._queue, self._stop),
                                        name="sideways_lab-prefetch", daemon=True)
        self._thread.start()

    def __iter__(self) -> "Prefetcher[T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    # The producer died without a sentinel (cannot normally happen).
                    self._done = True
                    raise StopIteration from None
        if isinstance(item, _End):
            self._done = True
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stops the producer thread and drops the buffered items."""
        self._done = True
        self._stop.set()
        while True:  # Unblock a producer waiting on a full queue.
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._done = True
            self._stop.set()
        except Exception:  # pragma: no cover - interpreter shutdown.
            pass


def prefetch(iterator: Iterable[T], buffer_size: int = 2) -> Prefetcher[T]:
    """Prepares the items of ``iterator`` on a background thread.

    ``for batch in prefetch(dataset.batches(32)):`` yields the same items in the
    same order as the source, while up to ``buffer_size`` upcoming items are
    computed ahead on a daemon thread.  Exceptions from the source are re-raised
    by ``next``; :meth:`Prefetcher.close` (or leaving a ``with`` block) stops the
    thread.  Note that a source which blocks forever inside ``next`` cannot be
    interrupted (Python threads cannot be killed); the daemon thread then simply
    does not keep the process alive.

    Args:
      iterator: any iterable (a generator, a list, ``moving_digits_batches``...).
      buffer_size: maximum number of items computed ahead (positive int).

    Returns:
      A :class:`Prefetcher`, an iterator and context manager.
    """
    return Prefetcher(iterator, buffer_size)
