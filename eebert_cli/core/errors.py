"""Errors a user can fix. The CLI prints them as one line plus a hint, no traceback."""

from __future__ import annotations


class EebertError(Exception):
    """A known failure: ``message`` says what is wrong, ``hint`` what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
