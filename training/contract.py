"""What a process outside ``train.py`` may rely on (the grid runner, a shell loop, a scheduler): its exit codes
and the name of the lock file it holds in ``--output_dir``. Kept free of heavy imports."""

EXIT_FINISHED = 0
EXIT_FAILED = 1  # a NaN loss, a full disk, ...: one line says what and the fix
EXIT_BAD_INPUT = 2  # refused before anything loaded: one line names the flag or file
# Another running process holds the --output_dir (EX_TEMPFAIL: try again later); a grid runner counts such
# a run as held by another worker, not as failed.
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130  # Ctrl-C (or the SIGINT a scheduler sends before pre-emption)

LOCK_NAME = ".train.lock"
