"""What the CLI prints as one line, without a traceback: bad input (UserError), files that cannot be written where the
user asked (WriteError), and warnings that something was skipped (SkippedWarning). Anything else is a bug and keeps
its traceback."""


class UserError(ValueError):
    """Bad input: the message says what is wrong and what would be valid."""


class WriteError(OSError):
    """A file could not be written (disk full, a read-only folder, a file where a folder should be): the environment,
    not a bug. `filename` is the file that was being written, `strerror` the cause."""


class SkippedWarning(UserWarning):
    """Something was left out and the work went on (damaged units skipped by `collect`): the CLI prints one line."""
