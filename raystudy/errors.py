"""Errors that end a command with a clear message (exit code 2), not a traceback."""


class StudyLockedError(RuntimeError):
    """Another driver is already running a study in this run folder."""
