"""Console and ``output.log`` logging for a run (transformers' own logger included)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import datasets
import transformers

FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
DATEFMT = "%m/%d/%Y %H:%M:%S"
_HANDLER_FLAG = "_train_py_handler"


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stdout at ``level`` (our packages) and at transformers' configured verbosity."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(handler)  # its sys.stdout may be gone (repeated in-process runs)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)


def set_library_verbosity(level: int) -> None:
    """transformers/datasets log level (``--log_level``; passive = warnings)."""
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)


def attach_log_file(path: Path, append: bool = False) -> logging.Handler:
    """Also write every record (ours and transformers') to ``path``.

    A new run overwrites the file (as the original); a resumed run appends, so the log of the
    interrupted part is kept.
    """
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    logging.getLogger().addHandler(handler)
    transformers.utils.logging.add_handler(handler)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    """Remove and close a handler from ``attach_log_file`` (so repeated in-process runs do not leak)."""
    logging.getLogger().removeHandler(handler)
    transformers.utils.logging.remove_handler(handler)
    handler.close()
