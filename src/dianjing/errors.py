"""User-facing errors. Each one says what is wrong, where, and what to do.

The CLI prints these without a stack trace; anything else is a bug in dianjing.
"""

from __future__ import annotations


class DianjingError(Exception):
    """An error caused by the user's input, config or environment."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message}\n  fix: {fix}")


class ConfigError(DianjingError):
    """A bad config key or value; the message names the key."""


class DataError(DianjingError):
    """A bad record; the message names the file, line (or record) and field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, fix: str | None = None):
        self.file, self.line, self.field = file, line, field
        self.detail = message  # without the place and field: what bad_records groups by and re-raises with
        where = ""
        if file is not None:
            where = f"{file}:{line}" if line is not None else str(file)
            where += ": "
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}{what}{message}", fix=fix)


class ModelError(DianjingError):
    """The model could not be found, converted or loaded."""
