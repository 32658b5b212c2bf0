"""Errors that end a command with a clear message and a nonzero exit code, not a traceback."""


class StudyLockedError(RuntimeError):
    """Another driver is already running a study in this run folder."""


class StudyInterrupted(BaseException):
    """SIGINT / SIGTERM stopped the study; finished results are kept and a rerun resumes.

    A :class:`BaseException`, as :class:`KeyboardInterrupt` is: no ``except Exception`` on
    the way (a report figure's guard, a retry loop) can swallow the interrupt.
    """

    def __init__(self, signum: int) -> None:
        super().__init__("interrupted; rerun the same command to resume")
        self.signum = signum
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM


class NothingToRun(RuntimeError):
    """Every cell of the study is skipped (its sizes exceed the labeled pool)."""


class StudyIncomplete(RuntimeError):
    """Cells ended without a result; the message names them."""


class PretrainingUnlearned(RuntimeError):
    """A pretraining did not beat its starting weights on the online kNN: the study stopped
    before the CSSL cells that would measure it (``pretrain.allow_unlearned`` continues)."""
