"""The one exception type for bad user input."""


class UserError(Exception):
    """Bad input at the boundary (config, files, command line).

    The message is one sentence that says what was wrong and what to do. Scripts
    print it without a traceback and exit non-zero.
    """
