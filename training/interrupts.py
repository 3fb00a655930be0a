"""Ctrl-C that a library swallows still stops the run.

Some library code catches every exception with a bare ``except:`` (the datasets library's fingerprinting,
which runs while a split is tokenised), so a ``KeyboardInterrupt`` raised there is lost and the run goes
on. ``interrupts_kept`` remembers every SIGINT that arrives inside its block and raises
``KeyboardInterrupt`` when the block ends if one arrived, whether or not the library let it through.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def interrupts_kept() -> Iterator[None]:
    """Within the block, Ctrl-C raises ``KeyboardInterrupt`` as usual and is also recorded; on leaving the
    block a recorded one is raised again. A no-op outside the main thread (no signal handlers there) and
    where SIGINT is ignored (a background job)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return
    arrived: list[int] = []

    def record_and_raise(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, record_and_raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if arrived:
        raise KeyboardInterrupt
