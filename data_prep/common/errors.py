"""The one exception type for bad input: the CLI prints its message as one line and exits non-zero."""


class InputError(Exception):
    """Bad input from the user (missing file, malformed dump, inconsistent arguments).

    The message must name the file (or argument) and the problem in one line; the CLI prints
    ``error: <message>`` with no traceback and exits with status 2.
    """
