"""One line for a failure that no check foresaw: what failed, which file, and the fix.

``train.py``'s top-level handler prints this line on the console (exit code 1) and writes the full
traceback into the run's ``output.log`` (or, before the run folder exists, into a log file in the
system's temporary folder, which the line names).
"""

from __future__ import annotations

import errno
import logging
import re
import tempfile
import traceback
from pathlib import Path

logger = logging.getLogger(__name__)

RERUN = "then rerun the same command (it resumes from the last complete checkpoint)"
# Rust-backed libraries (safetensors, tokenizers) report an OS error as text: "File too large (os error 27)".
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")


def os_error_number(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of an exception it was raised from, also when only its text carries it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        match = _OS_ERROR_TEXT.search(str(current))
        if match:
            return int(match.group(1))
        current = current.__cause__ or current.__context__
    return None


def write_cut_short(exc: BaseException) -> bool:
    """torch's zip writer reports a short write without an errno ("unexpected pos ... vs ...")."""
    text = str(exc)
    return "inline_container" in text and ("unexpected pos" in text or "write" in text)


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``), or None when there is none."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def describe_failure(exc: BaseException) -> str:
    """What failed and the fix, in one line."""
    number = os_error_number(exc)
    where = getattr(exc, "filename", None)
    target = f" while writing {where}" if where else ""
    if number == errno.ENOSPC:
        return f"no space left on the device{target}: free some space, {RERUN}."
    if number == errno.EFBIG or (number is None and write_cut_short(exc) and file_size_limit() is not None):
        return f"a file grew past the file-size limit{target} (ulimit -f): raise the limit, {RERUN}."
    if number is None and write_cut_short(exc):
        return f"a file write was cut short{target} (is the disk full?): free some space, {RERUN}."
    if number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{target} ({errno.errorcode[number]}): choose an --output_dir you can write to."
    if number == errno.ENOMEM or isinstance(exc, MemoryError) or any(
        text in str(exc) for text in ("can't allocate memory", "out of memory")
    ):
        return (
            "out of memory: lower --per_device_train_batch_size / --per_device_eval_batch_size or "
            f"--max_seq_length, {RERUN}."
        )
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


def traceback_file(output_log: Path | None) -> Path:
    """Where the traceback goes: the run's ``output.log`` when it exists, else a new temporary file."""
    if output_log is not None and output_log.is_file():
        return output_log
    handle = tempfile.NamedTemporaryFile(prefix="train-failure-", suffix=".log", delete=False)
    handle.close()
    return Path(handle.name)


def record_traceback(exc: BaseException, output_log: Path | None) -> Path | None:
    """Append the traceback of ``exc`` to ``traceback_file(output_log)``; None when nothing can be written
    (a full disk)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        path = traceback_file(output_log)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
        return path
    except OSError:
        return None
