"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2.

Raise a subclass of :class:`AlignrecError` for anything the user can fix — bad input files,
bad settings, a missing earlier stage. Messages name the file, the line/field and what was
expected.
"""


class AlignrecError(Exception):
    """Base class of errors caused by input or configuration, not by a bug."""


class InputError(AlignrecError, ValueError):
    """An input file or folder is missing, malformed or incomplete."""


class MissingDependencyError(AlignrecError, ImportError):
    """An optional package is needed; the message names the install command."""
