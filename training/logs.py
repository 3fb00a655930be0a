"""Console and ``output.log`` logging for a run.

The default console is what a user reads: records logged with ``extra=CONSOLE`` (the run's plan, one
metrics line per evaluation, where the results are) on stdout, and warnings and errors of this
project's own packages on stderr, one plain line each (``warning: ...``, ``error: ...``). Everything
else (argument dumps, per-step losses, the libraries' logs and Python warnings) goes only to
``output.log``. ``--log_level info`` (or ``debug``) turns the verbose console back on: every record,
timestamped, as in ``output.log``. A record logged with ``extra=LOG_ONLY`` never reaches the console.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import datasets
import transformers
from tqdm.auto import tqdm

FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
DATEFMT = "%m/%d/%Y %H:%M:%S"
CONSOLE = {"console": True}
LOG_ONLY = {"console": False}
# Loggers of this repository: their warnings and errors are shown on the default console.
OWN_LOGGERS = ("train", "training", "peft", "data", "metrics", "scripts")
# Libraries that print through handlers of their own; their records are routed through ours instead.
LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate")
_HANDLER_FLAG = "_train_py_handler"
_saved_library_state: dict[str, tuple[list[logging.Handler], bool]] = {}
_saved_progress_bars: tuple[bool, bool] | None = None
_saved_verbosity: tuple[int, int] | None = None


class ConsoleFilter(logging.Filter):
    """Decides which records one console stream shows (stdout: below WARNING; stderr: WARNING and up)."""

    def __init__(self, errors: bool, verbose: bool = False) -> None:
        super().__init__()
        self.errors = errors
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        shown = getattr(record, "console", None)
        if shown is False or (record.levelno >= logging.WARNING) != self.errors:
            return False
        if self.verbose or shown:
            return True
        return self.errors and record.name.split(".")[0] in OWN_LOGGERS


class PlainFormatter(logging.Formatter):
    """The message alone; warnings and errors start with ``warning:`` / ``error:`` unless marked CONSOLE."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and not getattr(record, "console", False):
            message = f"{record.levelname.lower()}: {message}"
        return message


class ProgressAwareHandler(logging.StreamHandler):
    """Writes through ``tqdm.write`` so that a line never lands inside a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise (as logging.StreamHandler)
            self.handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """Console handlers on the root logger (see the module docstring); libraries log through them."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(handler)  # its stream may be gone (repeated in-process runs)
    for stream, errors in ((sys.stdout, False), (sys.stderr, True)):
        handler = ProgressAwareHandler(stream)
        handler.addFilter(ConsoleFilter(errors, verbose))
        setattr(handler, _HANDLER_FLAG, True)
        root.addHandler(handler)
    global _saved_verbosity
    if _saved_verbosity is None:
        _saved_verbosity = (
            transformers.utils.logging.get_verbosity(),
            datasets.utils.logging.get_verbosity(),
        )
    _route_library_logs()
    logging.captureWarnings(True)  # Python warnings -> the "py.warnings" logger -> output.log
    set_console_verbose(verbose)


def set_console_verbose(verbose: bool) -> None:
    """Switch the console between the default (plan, progress, metrics) and every record."""
    global _saved_progress_bars
    for handler in logging.getLogger().handlers:
        if getattr(handler, _HANDLER_FLAG, False):
            handler.setFormatter(logging.Formatter(FORMAT, DATEFMT) if verbose else PlainFormatter())
            for console_filter in handler.filters:
                if isinstance(console_filter, ConsoleFilter):
                    console_filter.verbose = verbose
    if _saved_progress_bars is None:
        _saved_progress_bars = _progress_bars_enabled()
    # Loading, formatting and tokenising bars are chatter: only the training bar stays by default.
    _enable_progress_bars(*(verbose and was for was in _saved_progress_bars))


def _progress_bars_enabled() -> tuple[bool, bool]:
    return transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()


def _enable_progress_bars(transformers_bars: bool, datasets_bars: bool) -> None:
    if transformers_bars != transformers.utils.logging.is_progress_bar_enabled():
        switch = transformers.utils.logging
        (switch.enable_progress_bar if transformers_bars else switch.disable_progress_bar)()
    if datasets_bars != datasets.is_progress_bar_enabled():
        (datasets.enable_progress_bars if datasets_bars else datasets.disable_progress_bars)()


def is_verbose_level(log_level: str) -> bool:
    """True for a ``--log_level`` of info or more detail (the default, passive, keeps the console quiet)."""
    return log_level in ("info", "debug", "detail")


def restore_logging() -> None:
    """Undo ``setup_logging``'s changes to the libraries and to Python warnings (in-process reruns)."""
    global _saved_progress_bars, _saved_verbosity
    logging.captureWarnings(False)
    if _saved_verbosity is not None:
        transformers.utils.logging.set_verbosity(_saved_verbosity[0])
        datasets.utils.logging.set_verbosity(_saved_verbosity[1])
        _saved_verbosity = None
    for name, (handlers, propagate) in _saved_library_state.items():
        library = logging.getLogger(name)
        for handler in handlers:
            library.addHandler(handler)
        library.propagate = propagate
    _saved_library_state.clear()
    if _saved_progress_bars is not None:
        _enable_progress_bars(*_saved_progress_bars)
        _saved_progress_bars = None


def _route_library_logs() -> None:
    """Remove the libraries' own console handlers; their records propagate to the root's instead."""
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        own = [h for h in library.handlers if type(h) is logging.StreamHandler]
        if name not in _saved_library_state:
            _saved_library_state[name] = (own, library.propagate)
        for handler in own:
            library.removeHandler(handler)
        library.propagate = True


def set_library_verbosity(level: int) -> None:
    """transformers/datasets log level (``--log_level``; passive = warnings)."""
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)


def attach_log_file(path: Path, append: bool = False) -> logging.Handler:
    """Also write every record (ours and the libraries') to ``path``.

    A new run overwrites the file (as the original); a resumed run appends, so the log of the
    interrupted part is kept.
    """
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    logging.getLogger().addHandler(handler)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    """Remove and close a handler from ``attach_log_file`` (so repeated in-process runs do not leak)."""
    logging.getLogger().removeHandler(handler)
    handler.close()
