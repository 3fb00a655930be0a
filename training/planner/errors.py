"""The error of the run planner: a bad command line or environment, reported as one line (exit code 2)."""


class ConfigError(ValueError):
    """A bad command line or environment; the message names the flag to change."""
