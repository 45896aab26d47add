"""Errors about the user's input. Their messages name the file and line (or the field) and say
what was expected; the `lightkit` command prints them as one line instead of a traceback."""


class InputError(ValueError):
    """Bad input data or configuration."""
