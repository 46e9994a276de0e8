"""Errors a user can cause, kept apart from programming errors.

The command line turns a :class:`UserInputError` into its message and exit
code 2; anything else is a bug and keeps its traceback (exit code 1).
"""


class UserInputError(ValueError):
    """Bad input from the user: the message says what was wrong, what is
    allowed, and what to do next."""

    exit_code = 2


class DeviceUnavailableError(UserInputError):
    """A device named in the catalog cannot be reached right now."""
