"""The life of one ``train.py`` process around its run: the ``--output_dir`` lock, ``output.log``, Ctrl-C and
the exit code, in one context manager.

    life = RunLifecycle()
    with life:
        life.lock(output_dir, main_process=True, overwrite=False)
        ...                                   # the gate
        life.open_log(output_dir / "output.log", append=False, enabled=True)
        life.exit_code = run(...)
    return life.exit_code

Every way out of the block is an exit code with one console line: a ``ConfigError`` or ``RunDirError`` 2
(75, ``EXIT_BUSY``, when another process holds the folder), Ctrl-C 130, any other exception 1 with what
failed and the fix (``training.failures``) and its traceback in ``output.log`` (or in a file of its own
when the run's log is not open yet). The log is detached and the lock released in every case.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from training.console import interrupted_message
from training.contract import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_FAILED, EXIT_INTERRUPTED
from training.failures import describe_failure, record_traceback
from training.logs import CONSOLE, LOG_ONLY, attach_log_file, detach_log_file
from training.planner.errors import ConfigError
from training.run_dir import OutputDirBusy, OutputDirLock, OutputDirReadOnly, RunDirError, is_finished

logger = logging.getLogger("train")


class RunLifecycle:
    """Lock, log file and exit code of one run (see the module docstring)."""

    def __init__(self) -> None:
        self.exit_code = 0
        self._lock: OutputDirLock | None = None
        self._log: logging.Handler | None = None
        self._log_path: Path | None = None
        self._output_dir: Path | None = None
        self._overwrite = False

    @property
    def holds_lock(self) -> bool:
        return self._lock is not None and self._lock.held

    def lock(self, output_dir: Path, *, main_process: bool, overwrite: bool) -> None:
        """Take the folder's lock before anything looks at the folder (the main process only). A finished
        run on a read-only filesystem stays readable: "nothing to do" needs no lock."""
        self._output_dir, self._overwrite = output_dir, overwrite
        if not main_process:
            return
        self._lock = OutputDirLock(output_dir)
        try:
            self._lock.acquire()
        except OutputDirReadOnly:
            if overwrite or not is_finished(output_dir):
                raise

    def open_log(self, path: Path, *, append: bool, enabled: bool) -> None:
        """Write every record to ``path`` from now on (appended when the run continues an earlier one)."""
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log, self._log_path = attach_log_file(path, append=append), path

    def __enter__(self) -> RunLifecycle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        try:
            if exc is None:
                return False
            code = self._report(exc)
            if code is None:
                return False  # SystemExit and the like pass through
            self.exit_code = code
            return True
        finally:
            if self._log is not None:
                detach_log_file(self._log)
                self._log = None
            if self._lock is not None:
                self._lock.release()

    def _report(self, exc: BaseException) -> int | None:
        """One console line for ``exc`` and its exit code (None: not ours to handle)."""
        if isinstance(exc, (ConfigError, RunDirError)):
            logger.error("%s", " ".join(str(exc).split()))  # one line, also for a library's multi-line message
            return EXIT_BUSY if isinstance(exc, OutputDirBusy) else EXIT_BAD_INPUT
        if isinstance(exc, KeyboardInterrupt):
            if self._log is None or self._output_dir is None:
                logger.warning("interrupted before the run started; nothing was written.", extra=CONSOLE)
            else:
                logger.warning("%s", interrupted_message(self._output_dir, self._overwrite), extra=CONSOLE)
            return EXIT_INTERRUPTED
        if not isinstance(exc, Exception):
            return None
        if self._log is not None:
            logger.exception("run failed", extra=LOG_ONLY)  # the traceback, into output.log
            where: Path | str | None = self._log_path
        else:
            where = record_traceback(exc, None) or "no file (disk full)"
        logger.error("%s; the traceback is in %s", describe_failure(exc).rstrip("."), where)
        return EXIT_FAILED
