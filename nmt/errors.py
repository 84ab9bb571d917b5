"""Exceptions for mistakes a user can fix (bad config, missing file, offline hub, ...).

The command line prints an :class:`NMTError` as one line on stderr and exits with code 2;
any other exception is a bug and keeps its traceback.
"""


class NMTError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class ConfigError(NMTError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class DataError(NMTError):
    """Input data is missing, malformed or inconsistent."""


class HubUnreachableError(DataError):
    """The Hugging Face hub cannot be reached and the dataset is not cached locally."""


class TrainingInterrupted(NMTError):
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint (exit code 128 + signal)."""

    def __init__(self, signum: int, step: int, config_path: object) -> None:
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name} at update {step}; the "
                         f"checkpoint is saved: continue with nmt train --config {config_path} "
                         "--resume")
        self.exit_code = 128 + signum
