"""Error types and the exit codes they map to.

Every error a user can cause (a bad config, a malformed data file, a missing
package) is a :class:`UserError` and exits with code 2; anything else that goes
wrong inside tunesmith exits with code 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
#: ``tunesmith monitor`` found an alert (for cron and CI: a run that worked, with news).
EXIT_ALERT = 3


class TunesmithError(Exception):
    """Base class of tunesmith's own errors (exit code 1)."""

    exit_code = EXIT_INTERNAL


class UserError(TunesmithError):
    """Bad input from the user: config, data, command-line arguments (exit code 2)."""

    exit_code = EXIT_USER


class ConfigError(UserError):
    """The project file or a ``--set`` override is invalid."""


class DataError(UserError):
    """A data file cannot be read or holds an invalid row.

    Args:
        message: What is wrong.
        path: The file, when known.
        line: The 1-based line (or CSV row) number, when known.
        field: The field (column) at fault, when known.
    """

    def __init__(self, message: str, *, path: object = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        #: The problem without its location, as recorded for a set-aside row.
        self.reason = f"field '{field}': {message}" if field is not None else message
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            message = f"field '{field}': {message}"
        super().__init__(where + message)


class ModelError(UserError):
    """The base model cannot be found, converted or loaded."""
